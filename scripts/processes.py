"""Start, watch and stop the two servers: the one implementation behind ``make run``, the benchmark and the tests.

* ``model_server_command`` / ``gateway_command``: the servers' command lines (the gateway always with
  ``flask_server/gunicorn.conf.py``, so everything that starts it runs the production settings).
* ``ChildProcess``: a server in its own process group, its output kept in a log file or echoed;
  ``stop`` ends the whole group (SIGTERM, bounded wait, SIGKILL).
* ``wait_for_model`` / ``wait_for_http_ok`` / ``poll_until``: bounded readiness waits that fail at
  once, with the server's last lines, if it dies while starting, and that accept an answer only
  from the process they wait for (not from another program already on the port).

scripts/auto_cmd.py adds the command-line front end and scripts/supervisor.py the restarts;
bench/servers.py and tests/support/processes.py add free ports, memory readings and pytest-friendly
wrappers.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests

from scripts.port_check import describe_holder, listener_pids

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({LOOPBACK, "localhost", "0.0.0.0", "::1"})
# The real server insists on a gRPC port; ours serves gRPC on --port only when it is not 0.
REAL_SERVER_GRPC_PORT = 8500
REAL_SERVER_BINARY = "tensorflow_model_server"
DEFAULT_POLL_WAIT_SECONDS = 1  # TF Serving's default: a `make export` is picked up within a second
GUNICORN_CONF = REPO_ROOT / "flask_server" / "gunicorn.conf.py"
GATEWAY_APP = "flask_server.app:create_app()"
STARTUP_TIMEOUT = 300.0  # InceptionV3 loads in ~15 s on 2 cores; leave room for a slow disk
STOP_TIMEOUT = 20.0  # > gunicorn's graceful_timeout (15 s), so a clean shutdown is never cut short
LOG_TAIL_LINES = 30
POLL_INTERVAL = 0.1


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class ChildDied(RuntimeError):
    """A server exited while we were waiting for it; the message holds its last log lines."""


class ChildProcess:
    """A server process in its own process group whose output is kept (and optionally echoed).

    Without ``echo`` the output goes straight to ``log_path`` (a new temp file when not given): no
    reader thread, and the file is complete the moment the process has written it. With ``echo``
    it is read through a pipe, printed prefixed with ``[name]``, kept in a bounded tail (a
    long-running ``make run`` must not fill a disk) and copied to ``log_path`` when given.
    """

    report_lines = LOG_TAIL_LINES  # how many last lines error messages quote

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None,
                 echo: bool = True, log_path: Path | None = None, cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.args = list(args)
        self.started_at = time.monotonic()
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._echo = echo
        self._reader: threading.Thread | None = None
        self._log_file = None
        if log_path is None and not echo:
            log_path = Path(tempfile.mkstemp(prefix=f"{name.replace(' ', '_')}-", suffix=".log")[1])
        self.log_path = Path(log_path) if log_path else None
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # `python -m model_server` and gunicorn import our packages from the repository.
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        if echo:
            self._log_file = open(self.log_path, "w", encoding="utf-8") if self.log_path else None  # noqa: SIM115
            stdout = subprocess.PIPE
        else:
            stdout = open(self.log_path, "wb")  # noqa: SIM115 (closed right after the child inherits it)
        try:
            self.popen = subprocess.Popen(self.args, cwd=cwd, env=full_env, stdout=stdout,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        finally:
            if not echo:
                stdout.close()
        if echo:
            self._reader = threading.Thread(target=self._read_output, name=f"{name}-log", daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read_output(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self._tail.append(line)
            if self._log_file:
                self._log_file.write(line + "\n")
                self._log_file.flush()
            if self._echo:
                print(f"[{self.name}] {line}", flush=True)

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def alive(self) -> bool:
        """True while the main process has not exited."""
        return self.popen.poll() is None

    def listener_not_ours(self, port: int) -> str | None:
        """Who listens on ``port`` if it is visibly not this process group (e.g. "pid 123 (...)"); else None.

        None also when the listeners cannot be seen (no /proc, another user's process): then the
        answer is accepted, as before this check existed.
        """
        pids = listener_pids(port)
        if not pids or any(_process_group(pid) == self.popen.pid for pid in pids):
            return None
        return describe_holder(port)

    def log(self) -> str:
        """Everything the process has printed so far (with ``echo`` and no ``log_path``: the last 200 lines)."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return "\n".join(self._tail)

    def tail(self, lines: int | None = None) -> str:
        """The last ``lines`` (default ``report_lines``) lines the process printed."""
        lines = lines or self.report_lines
        recent = list(self._tail) if self._reader else self.log().splitlines()
        return "\n".join(recent[-lines:])

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group without waiting (to stop several servers at once; then ``stop``)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` to the process group, wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        if self.popen.poll() is None:
            self.terminate(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"[{self.name}] did not stop in {timeout:.0f} s; sending SIGKILL", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        # Workers the leader left behind (it died first) are still in the group: kill them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self._reader:
            self._reader.join(2)
        if self.popen.stdout is not None and not self._reader_alive():
            self.popen.stdout.close()
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


def model_server_command(model_name: str | None, model_base_path: Path | None, rest_api_port: int,
                         host: str = LOOPBACK, poll_wait_seconds: int | None = DEFAULT_POLL_WAIT_SECONDS,
                         extra_args: Sequence[str] = (), real_if_installed: bool = True,
                         grpc_port: int = 0) -> list[str]:
    """TF Serving's command line: the real binary if installed (and wanted), else ``python -m model_server``.

    Only ours takes ``--rest_api_host`` (it binds the gRPC port there too); the real server always
    listens on every interface. ``grpc_port`` 0 turns gRPC off in ours; the real server needs one,
    so it then gets REAL_SERVER_GRPC_PORT.
    ``model_name``/``model_base_path`` may be None when ``extra_args`` name a ``--model_config_file``;
    ``poll_wait_seconds=None`` keeps the server's own default (1 s). The tests pass
    ``real_if_installed=False``: they test our server, whatever is on PATH.
    """
    flags = [f"--rest_api_port={rest_api_port}"]
    if model_name:
        flags.append(f"--model_name={model_name}")
    if model_base_path:
        flags.append(f"--model_base_path={Path(model_base_path).resolve()}")
    if poll_wait_seconds is not None:
        flags.append(f"--file_system_poll_wait_seconds={poll_wait_seconds}")
    flags += list(extra_args)
    binary = shutil.which(REAL_SERVER_BINARY) if real_if_installed else None
    if binary:
        return [binary, f"--port={grpc_port or REAL_SERVER_GRPC_PORT}", *flags]
    return [sys.executable, "-m", "model_server", f"--port={grpc_port}", f"--rest_api_host={host}", *flags]


def gateway_command(bind: str, workers: int | None = None, threads: int | None = None,
                    extra_args: Sequence[str] = ()) -> list[str]:
    """gunicorn with the production config; ``workers``/``threads``/``extra_args`` override its values.

    ``bind`` is always given: the config's default (GATEWAY_BIND or 127.0.0.1:5000) is for a
    hand-started gunicorn, and a fixed port would collide between servers started side by side.
    """
    args = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    if threads:
        args += ["--threads", str(threads)]
    return [*args, *extra_args, GATEWAY_APP]


def gateway_env(model_server_url: str, models_config: Path | None = None) -> dict[str, str]:
    """Environment for the gateway: the model server's URL, and MODELS_CONFIG: the user's if set,
    else ``models_config`` (auto_cmd's route per served model) when given."""
    env = {"MODEL_SERVER_URL": model_server_url}
    if os.environ.get("MODELS_CONFIG"):
        env["MODELS_CONFIG"] = os.environ["MODELS_CONFIG"]
    elif models_config is not None:
        env["MODELS_CONFIG"] = str(models_config)
    return env


def model_state(response: requests.Response) -> tuple[str, bool]:
    """(state, done) of a ``GET /v1/models/<name>`` answer: done once a version is AVAILABLE.

    Only TF Serving's model status JSON counts: any other 200 (another program on the port) is
    reported as such and never taken for a ready model.
    """
    if response.status_code != 200:
        return f"HTTP {response.status_code}", False
    body = response.json()
    versions = body.get("model_version_status") if isinstance(body, dict) else None
    if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
        return "HTTP 200 without a model_version_status list (not a model server?)", False
    states = [v.get("state", "?") for v in versions]
    if "AVAILABLE" in states:
        return "AVAILABLE", True
    return ",".join(states) or "no versions yet", False


def http_ok_state(response: requests.Response) -> tuple[str, bool]:
    """(state, done) of any answer: done on 200."""
    return f"HTTP {response.status_code}", response.status_code == 200


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # exited meanwhile
        return None


def _local_port(url: str) -> int | None:
    """The port of a URL on this machine (the only kind whose listener can be looked up), else None."""
    parts = urlsplit(url)
    return parts.port if parts.hostname in LOCAL_HOSTS else None


class StopRequested(Exception):
    """A stop was asked for (SIGTERM, Ctrl-C, ``q``) while waiting for a server to become ready."""


def poll_until(url: str, child: ChildProcess, timeout: float,
               state_of: Callable[[requests.Response], tuple[str, bool]],
               on_state: Callable[[str, float], None] | None = None,
               stop: threading.Event | None = None) -> tuple[requests.Response, float]:
    """GET ``url`` until ``state_of(response)`` says done; return that response and seconds since spawn.

    ``on_state(state, elapsed)`` is called whenever the state changes ("connecting", "LOADING",
    "HTTP 503"...). Raises ChildDied at once if ``child`` exits, TimeoutError after ``timeout`` s;
    both quote the child's last lines, which is what explains a failed start. Raises StopRequested
    once ``stop`` is set, so a signal handler only has to set an event (raising from a handler can
    unwind through a lock held inside subprocess or threading and leave it held).

    An answer counts only if it comes from ``child``: when another process visibly holds the port
    (a server that was already running there), the state says so and the wait goes on.
    """
    deadline = time.monotonic() + timeout
    port = _local_port(url)
    last_state = None
    stop = stop or threading.Event()
    with requests.Session() as session:
        while True:
            if stop.is_set():
                raise StopRequested(f"stopped while waiting for {child.name}")
            if not child.alive():
                raise ChildDied(f"{child.name} exited with code {child.popen.returncode} during start-up; "
                                f"last lines:\n{child.tail()}")
            response = None
            try:
                response = session.get(url, timeout=2)
                state, done = state_of(response)
            except (requests.RequestException, ValueError) as exc:  # not listening yet / half-started
                state, done = ("connecting" if response is None else repr(exc)), False
            # Looked up when the answer changes or would be accepted: a /proc scan is ~15 ms.
            if response is not None and port is not None and (done or state != last_state):
                stranger = child.listener_not_ours(port)
                if stranger:
                    state, done = f"port {port} answered by {stranger}, not by {child.name}", False
            elapsed = time.monotonic() - child.started_at
            if state != last_state and on_state:
                on_state(state, elapsed)
            last_state = state
            if done:
                return response, elapsed
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last state: {state}); "
                                   f"{child.name} last lines:\n{child.tail()}")
            stop.wait(POLL_INTERVAL)


def wait_for_model(url: str, model_name: str, child: ChildProcess, timeout: float = STARTUP_TIMEOUT,
                   on_state: Callable[[str, float], None] | None = None,
                   stop: threading.Event | None = None) -> float:
    """Poll ``GET /v1/models/<name>`` until a version is AVAILABLE; return seconds since spawn."""
    return poll_until(f"{url}/v1/models/{model_name}", child, timeout, model_state, on_state, stop)[1]


def wait_for_http_ok(url: str, child: ChildProcess, timeout: float = STARTUP_TIMEOUT,
                     on_state: Callable[[str, float], None] | None = None,
                     stop: threading.Event | None = None) -> float:
    """Poll ``url`` until it answers 200; return seconds since the child was spawned."""
    return poll_until(url, child, timeout, http_ok_state, on_state, stop)[1]


def wait_for_models(url: str, model_names: Sequence[str], child: ChildProcess, timeout: float = STARTUP_TIMEOUT,
                    on_state: Callable[[str, float], None] | None = None,
                    stop: threading.Event | None = None) -> float:
    """``wait_for_model`` for each model in turn (one deadline for all); seconds since spawn.

    With several models each state ``on_state`` gets is prefixed with the model's name.
    """
    def reporter(name: str) -> Callable[[str, float], None] | None:
        if on_state is None or len(model_names) == 1:
            return on_state
        return lambda state, seconds: on_state(f"{name}: {state}", seconds)

    deadline = time.monotonic() + timeout
    elapsed = 0.0
    for name in model_names:
        elapsed = wait_for_model(url, name, child, max(0.0, deadline - time.monotonic()), reporter(name), stop)
    return elapsed
