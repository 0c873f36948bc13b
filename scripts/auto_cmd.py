"""Start the model server and the Flask gateway together, show their progress, stop both cleanly.

The model server is the real ``tensorflow_model_server`` when it is on PATH, otherwise our
``python -m model_server`` with the same flags. The gateway is ``flask_server.app:create_app()``
under gunicorn with ``flask_server/gunicorn.conf.py``, pointed at the model server through
``MODEL_SERVER_URL`` (``MODELS_CONFIG`` passes through when set). Both children run in their own
process groups, so Ctrl-C reaches this script only and it stops them in order: SIGTERM, a bounded
wait, then SIGKILL.

Stop with ``q`` / ``exit`` + Enter, Ctrl-C or SIGTERM. With ``--no-input`` (or when stdin is not a
terminal and reaches end of file, e.g. ``< /dev/null``) it runs until SIGTERM or Ctrl-C.
If a server dies, its last log lines are printed, the other one is stopped and the exit code is 1.

Typical usage (``make run`` does this after exporting a model)::

    .venv/bin/python scripts/auto_cmd.py --model-base-path my_image_classifier
    .venv/bin/python scripts/auto_cmd.py --host 0.0.0.0   # reachable from other machines

The helpers below (``ChildProcess``, ``model_server_command``, ``gateway_command``, the waits) are
also what ``python -m bench`` uses, so the benchmark measures exactly what ``make run`` starts.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_BASE_PATH = REPO_ROOT / "my_image_classifier"
DEFAULT_MODEL_NAME = "ImageClassifier"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_REST_API_PORT = 9000
DEFAULT_GATEWAY_PORT = 5000
DEFAULT_GATEWAY_WORKERS = 2  # one per core on the 2-core reference machine; see gunicorn.conf.py
# The real server insists on a gRPC port; ours accepts the flag and ignores it (0 = disabled).
REAL_SERVER_GRPC_PORT = 8500
REAL_SERVER_BINARY = "tensorflow_model_server"
DEFAULT_POLL_WAIT_SECONDS = 5  # how often the model server looks for new versions (`make export`)
GUNICORN_CONF = REPO_ROOT / "flask_server" / "gunicorn.conf.py"
GATEWAY_APP = "flask_server.app:create_app()"
STARTUP_TIMEOUT = 300.0  # InceptionV3 loads in ~15 s on 2 cores; leave room for a slow disk
STOP_TIMEOUT = 20.0  # > gunicorn's graceful_timeout, so a clean shutdown is never cut short
LOG_TAIL_LINES = 30
QUIT_WORDS = frozenset({"q", "quit", "exit"})
SAMPLE_IMAGE = "test_images/chelsea.jpg"


class ChildProcess:
    """A server process in its own process group whose output is kept (and optionally echoed).

    Output lines go to a bounded tail (for error reports), to ``log_path`` when given, and, with
    ``echo``, to our stdout prefixed with ``[name]``.
    """

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None,
                 echo: bool = True, log_path: Path | None = None, cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.args = list(args)
        self.started_at = time.monotonic()
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._echo = echo
        self._log_file = open(log_path, "w", encoding="utf-8") if log_path else None  # noqa: SIM115
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # `python -m model_server` and gunicorn import our packages from the repository.
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(self.args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
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

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the process printed."""
        return "\n".join(list(self._tail)[-lines:])

    def terminate(self) -> None:
        """SIGTERM the process group without waiting (to stop several servers at once; then ``stop``)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        if self.popen.poll() is None:
            self.terminate()
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
        self._reader.join(2)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


class StopRequested(Exception):
    """SIGTERM or Ctrl-C arrived; unwinds whatever we were doing (even a start-up wait)."""


class ChildDied(RuntimeError):
    """A server exited while we were waiting for it; the message holds its last log lines."""


def model_server_command(model_name: str, model_base_path: Path, rest_api_port: int, host: str = DEFAULT_HOST,
                         poll_wait_seconds: int = DEFAULT_POLL_WAIT_SECONDS,
                         extra_args: Sequence[str] = ()) -> list[str]:
    """TF Serving's command line: the real binary if installed, else ``python -m model_server``.

    Only ours takes ``--rest_api_host``; the real server always listens on every interface.
    """
    flags = [f"--rest_api_port={rest_api_port}", f"--model_name={model_name}",
             f"--model_base_path={Path(model_base_path).resolve()}",
             f"--file_system_poll_wait_seconds={poll_wait_seconds}", *extra_args]
    binary = shutil.which(REAL_SERVER_BINARY)
    if binary:
        return [binary, f"--port={REAL_SERVER_GRPC_PORT}", *flags]
    return [sys.executable, "-m", "model_server", "--port=0", f"--rest_api_host={host}", *flags]


def gateway_command(bind: str, workers: int | None = None, threads: int | None = None) -> list[str]:
    """gunicorn with the production config; ``workers``/``threads`` override its defaults."""
    args = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    if threads:
        args += ["--threads", str(threads)]
    return [*args, GATEWAY_APP]


def gateway_env(model_server_url: str) -> dict[str, str]:
    """Environment for the gateway: the model server's URL, and MODELS_CONFIG if the user set one."""
    env = {"MODEL_SERVER_URL": model_server_url}
    if os.environ.get("MODELS_CONFIG"):
        env["MODELS_CONFIG"] = os.environ["MODELS_CONFIG"]
    return env


def client_host(host: str) -> str:
    """Where a local client connects when a server binds ``host`` (0.0.0.0 means all interfaces)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def wait_for_model(url: str, model_name: str, child: ChildProcess, timeout: float = STARTUP_TIMEOUT,
                   on_state: Callable[[str, float], None] | None = None) -> float:
    """Poll ``GET /v1/models/<name>`` until a version is AVAILABLE; return seconds since spawn.

    ``on_state(state, elapsed)`` is called whenever the reported state changes ("connecting",
    "START", "LOADING", "AVAILABLE", an HTTP status...). Raises ChildDied or TimeoutError.
    """
    def available(response: requests.Response) -> tuple[str, bool]:
        if response.status_code != 200:
            return f"HTTP {response.status_code}", False
        states = [v.get("state", "?") for v in response.json().get("model_version_status", [])]
        if "AVAILABLE" in states:
            return "AVAILABLE", True
        return ",".join(states) or "no versions yet", False

    return _poll(f"{url}/v1/models/{model_name}", child, timeout, available, on_state)


def wait_for_http_ok(url: str, child: ChildProcess, timeout: float = STARTUP_TIMEOUT,
                     on_state: Callable[[str, float], None] | None = None) -> float:
    """Poll ``url`` until it answers 200; return seconds since the child was spawned."""
    def ok(response: requests.Response) -> tuple[str, bool]:
        return f"HTTP {response.status_code}", response.status_code == 200

    return _poll(url, child, timeout, ok, on_state)


def _poll(url: str, child: ChildProcess, timeout: float,
          state_of: Callable[[requests.Response], tuple[str, bool]],
          on_state: Callable[[str, float], None] | None) -> float:
    deadline = time.monotonic() + timeout
    last_state = None
    with requests.Session() as session:
        while True:
            if not child.alive():
                raise ChildDied(f"{child.name} exited with code {child.popen.returncode} during start-up; "
                                f"last lines:\n{child.tail()}")
            try:
                state, done = state_of(session.get(url, timeout=2))
            except (requests.RequestException, ValueError):
                state, done = "connecting", False
            elapsed = time.monotonic() - child.started_at
            if state != last_state and on_state:
                on_state(state, elapsed)
            last_state = state
            if done:
                return elapsed
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last state: {state}); "
                                   f"{child.name} last lines:\n{child.tail()}")
            time.sleep(0.2)


def sample_commands(gateway_url: str, model_server_url: str, model_name: str) -> list[str]:
    """Ready-to-paste requests against both servers."""
    return [
        f".venv/bin/python flask_server/flask_sample_request.py -i {SAMPLE_IMAGE} --url {gateway_url}",
        f".venv/bin/python scripts/serving_sample_request.py -i {SAMPLE_IMAGE} --url {model_server_url} "
        f"--model {model_name}",
        f"curl {gateway_url}/readyz",
    ]


def _watch_stdin(stop: threading.Event) -> None:
    """Set ``stop`` on a quit word. EOF means "no keyboard" (stdin is /dev/null): keep running."""
    for line in sys.stdin:
        if line.strip().lower() in QUIT_WORDS:
            stop.set()
            return


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path, default=DEFAULT_MODEL_BASE_PATH,
                        help="directory of numeric SavedModel versions (default: <repo>/my_image_classifier)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="model name in URLs (%(default)s)")
    parser.add_argument("--rest-api-port", type=int, default=DEFAULT_REST_API_PORT,
                        help="model server REST port (%(default)s)")
    parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT, help="gateway port (%(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address both servers bind (%(default)s; 0.0.0.0 exposes them to other machines). "
                             "The real tensorflow_model_server ignores it and listens on all interfaces")
    parser.add_argument("--gateway-workers", type=int, default=None,
                        help="gunicorn worker processes (default: GATEWAY_WORKERS or 2, see gunicorn.conf.py)")
    parser.add_argument("--poll-wait-seconds", type=int, default=DEFAULT_POLL_WAIT_SECONDS,
                        help="how often the model server looks for new versions (%(default)s s)")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT,
                        help="seconds each server may take to become ready (%(default)s)")
    parser.add_argument("--no-input", action="store_true",
                        help="do not read the keyboard; run until SIGTERM or Ctrl-C")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress must show up at once, even through a pipe
    base_path = args.model_base_path.resolve()
    if not base_path.is_dir() or not any(p.name.isdigit() for p in base_path.iterdir()):
        print(f"error: no numeric model version under {base_path}; export one first "
              f"(make model, or scripts/export_saved_model.py --base-path {base_path})", file=sys.stderr)
        return 2

    stop = threading.Event()
    stopping = False

    def on_signal(signum: int, _frame) -> None:
        stop.set()
        if not stopping:  # raising again would abort the clean shutdown below
            raise StopRequested(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    ms_url = f"http://{client_host(args.host)}:{args.rest_api_port}"
    gw_url = f"http://{client_host(args.host)}:{args.gateway_port}"
    ms_args = model_server_command(args.model_name, base_path, args.rest_api_port, args.host, args.poll_wait_seconds)
    gw_args = gateway_command(f"{args.host}:{args.gateway_port}", args.gateway_workers)

    def progress(name: str) -> Callable[[str, float], None]:
        return lambda state, elapsed: print(f"[{name}] {state} after {elapsed:.1f} s", flush=True)

    code = 0
    children: list[ChildProcess] = []
    try:
        print(f"starting model server: {' '.join(ms_args)}", flush=True)
        children.append(ChildProcess("model_server", ms_args))
        print(f"starting gateway:      {' '.join(gw_args)}", flush=True)
        children.append(ChildProcess("gateway", gw_args, env=gateway_env(ms_url)))
        # Both start at once (the gateway needs no model to boot); readiness is checked in order.
        ms_ready = wait_for_model(ms_url, args.model_name, children[0], args.startup_timeout, progress("model_server"))
        gw_ready = wait_for_http_ok(f"{gw_url}/readyz", children[1], args.startup_timeout, progress("gateway"))
        print(f"\nready: model server {ms_url} ({ms_ready:.1f} s), gateway {gw_url} ({gw_ready:.1f} s)")
        print(f"  model status: {ms_url}/v1/models/{args.model_name}")
        print("  try:\n    " + "\n    ".join(sample_commands(gw_url, ms_url, args.model_name)))
        if args.no_input:
            print("running until SIGTERM or Ctrl-C", flush=True)
        else:
            print("type q + Enter (or Ctrl-C) to stop", flush=True)
            threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
        while not stop.wait(0.5):
            dead = next((c for c in children if not c.alive()), None)
            if dead:
                print(f"\nerror: {dead.name} exited with code {dead.popen.returncode}; last lines:\n{dead.tail()}",
                      file=sys.stderr, flush=True)
                code = 1
                break
    except StopRequested as exc:
        print(f"\n{exc} received", flush=True)
    except (ChildDied, TimeoutError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stopping = True
        print("stopping...", flush=True)
        # Gateway first, so it stops taking requests before its backend goes away.
        for child in reversed(children):
            returncode = child.stop()
            print(f"[{child.name}] stopped (exit code {returncode})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
