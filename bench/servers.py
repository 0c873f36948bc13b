"""Start the model server and the gunicorn gateway for the benchmark, exactly as ``make run`` does,
and the bare model process they are compared with.

The commands and the process handling come from scripts/processes.py (shared with scripts/auto_cmd.py
and the tests); here they get free ports on 127.0.0.1, log files instead of the terminal, and memory
readings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.procinfo import children, peak_rss_mb, rss_mb, tree
from scripts.processes import (LOOPBACK, REPO_ROOT, ChildProcess, free_port, gateway_command, gateway_env,
                               model_server_command, wait_for_http_ok, wait_for_model)

HOST = LOOPBACK
# TF Serving's batching parameters (text proto), as given in the brief and the model server's docs.
BATCHING_PARAMETERS = """\
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 32 }
"""
STARTUP_TIMEOUT = 180.0
UNLIMITED = "default=1000000/minute"


@dataclasses.dataclass
class RunningServer:
    """A started server: its process, URL and, once ``wait_ready`` returned, its cold start."""

    name: str
    child: ChildProcess
    url: str
    ready_check: Callable[[], float]  # blocks until ready, returns seconds since spawn
    cold_start_s: float | None = None

    def wait_ready(self) -> RunningServer:
        """Block until the server is ready (ChildDied / TimeoutError otherwise); idempotent."""
        if self.cold_start_s is None:
            self.cold_start_s = self.ready_check()
        return self

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree now."""
        return sum(rss_mb(pid) for pid in tree(self.child.pid))

    def peak_rss_mb(self) -> float:
        """Sum over the tree of each process's peak (an upper bound for a multi-process server)."""
        return sum(peak_rss_mb(pid) for pid in tree(self.child.pid))

    def worker_rss_mb(self) -> list[tuple[float, float]]:
        """(now, peak) for each direct child: gunicorn's workers."""
        return [(rss_mb(pid), peak_rss_mb(pid)) for pid in children(self.child.pid)]


@contextlib.contextmanager
def model_server(name: str, model_name: str, base_path: Path, log_dir: Path, batching: bool = False,
                 wait: bool = True, extra_args: Sequence[str] = (),
                 extra_env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> Iterator[RunningServer]:
    """Run the model server (optionally with ``--enable_batching``, then ``extra_args``, in an
    environment with ``extra_env`` added; ``cwd``: the checkout whose ``model_server`` runs); with
    ``wait``, until AVAILABLE."""
    port = free_port()
    extra: Sequence[str] = ()
    if batching:
        params = log_dir / "batching_parameters.txt"
        params.write_text(BATCHING_PARAMETERS)
        extra = ("--enable_batching", f"--batching_parameters_file={params}")
    extra = (*extra, *extra_args)
    args = model_server_command(model_name, base_path, port, HOST, extra_args=extra)
    with _serve(name, args, port, log_dir, wait,
                lambda url, child: wait_for_model(url, model_name, child, STARTUP_TIMEOUT), extra_env, cwd) as server:
        yield server


@contextlib.contextmanager
def gateway(name: str, model_server_url: str, log_dir: Path, workers: int | None = None, threads: int | None = None,
            models_config: Path | None = None, wait: bool = True,
            extra_env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """Run the gateway under gunicorn with flask_server/gunicorn.conf.py; with ``wait``, until /readyz is 200.

    The rate limit is lifted (the default 60/minute per client would turn the benchmark into 429s).
    """
    port = free_port()
    args = gateway_command(f"{HOST}:{port}", workers, threads)
    env = {**gateway_env(model_server_url), "GATEWAY_RATE_LIMITS": UNLIMITED}
    if models_config:
        env["MODELS_CONFIG"] = str(models_config)
    env.update(extra_env or {})
    with _serve(name, args, port, log_dir, wait,
                lambda url, child: wait_for_http_ok(f"{url}/readyz", child, STARTUP_TIMEOUT), env) as server:
        yield server


@contextlib.contextmanager
def _serve(name: str, args: Sequence[str], port: int, log_dir: Path, wait: bool,
           ready: Callable[[str, ChildProcess], float],
           env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> Iterator[RunningServer]:
    """Run ``args`` in ``cwd`` logging to ``log_dir``; ``ready(url, child)`` blocks until it serves; stop it
    at the end."""
    child = ChildProcess(name, args, env=env, echo=False, log_path=log_dir / f"{name.replace(' ', '_')}.log", cwd=cwd)
    url = f"http://{HOST}:{port}"
    server = RunningServer(name, child, url, lambda: ready(url, child))
    try:
        yield server.wait_ready() if wait else server
    finally:
        child.stop()


class BareProcess:
    """``python -m bench.bare_model`` as a child: send a command, get its JSON answer."""

    def __init__(self, version_dir: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self._started = time.monotonic()
        self.popen = subprocess.Popen([sys.executable, "-m", "bench.bare_model", "--version-dir", str(version_dir),
                                       *extra_args],
                                      cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                                      env=None if env is None else {**os.environ, **env})
        self.cold_start_s: float | None = None
        self.ready_info: dict = {}

    def wait_ready(self) -> BareProcess:
        """Block until the model is loaded and warmed up (its ``{"ready": true, ...}`` line, kept in
        ``ready_info``)."""
        if self.cold_start_s is None:
            self.ready_info = self.ask_line()
            self.cold_start_s = time.monotonic() - self._started
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ask_line(self, command: dict | None = None) -> dict:
        """Send ``command`` (if any) and return the next answer; RuntimeError if the process died."""
        if command is not None:
            self.popen.stdin.write(json.dumps(command) + "\n")
            self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"bare model process exited with code {self.popen.wait(10)}")
        return json.loads(line)

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


@contextlib.contextmanager
def bare_process(version_dir: Path, wait: bool = True, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> Iterator[BareProcess]:
    """The bare model process for the benchmark's duration (``extra_args``: bench.bare_model's flags;
    ``env``: variables added to this process's environment)."""
    bare = BareProcess(version_dir, extra_args, env)
    try:
        yield bare.wait_ready() if wait else bare
    finally:
        bare.stop()


def bare_send(bare: BareProcess):
    """The bare model as a request function: one batch-1 call, timed inside the bare process."""
    def send(_session, _i: int) -> float:
        return bare.ask_line({"latency": 1})["p50_ms"] / 1000

    return send
