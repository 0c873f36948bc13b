"""Real server processes for end-to-end tests: 127.0.0.1, ephemeral ports, bounded waits.

Typical use::

    with start_model_server(model_name="tiny", model_base_path=path) as ms:
        requests.get(ms.url + "/v1/models/tiny")
    with start_gateway({"MODEL_SERVER_URL": ms.url}) as gw:
        requests.get(gw.url + "/healthz")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started by a test; ``log()`` returns what it has printed so far."""

    popen: subprocess.Popen
    port: int
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the whole process group and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode


def spawn(args: Sequence[str], port: int, env: Mapping[str, str] | None = None,
          cwd: Path = REPO_ROOT) -> ServerProcess:
    """Start ``args`` in its own process group with output to a temp log file."""
    log = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    with open(log, "wb") as out:
        popen = subprocess.Popen(list(args), cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return ServerProcess(popen, port, log)


def wait_until(server: ServerProcess, path: str, timeout: float = 60.0,
               ok=lambda r: r.status_code == 200) -> requests.Response:
    """Poll ``server.url + path`` until ``ok(response)``; fail with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with {server.popen.returncode}:\n{server.log()[-4000:]}")
        try:
            response = requests.get(server.url + path, timeout=2)
            if ok(response):
                return response
            last = f"{response.status_code} {response.text[:300]}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{server.url}{path} not ready after {timeout}s (last: {last}):\n{server.log()[-4000:]}")


def model_available(name: str):
    """A ``wait_until`` predicate: the model has a version AVAILABLE."""
    def ok(response: requests.Response) -> bool:
        return response.status_code == 200 and any(
            v.get("state") == "AVAILABLE" for v in response.json().get("model_version_status", []))
    ok.__name__ = f"model_available({name})"
    return ok


@contextlib.contextmanager
def start_model_server(model_name: str | None = None, model_base_path: str | Path | None = None,
                       extra_args: Sequence[str] = (), wait_for: str | None = None,
                       timeout: float = 90.0, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """Run ``python -m model_server`` on a free port; wait until ``wait_for`` (default model_name) is AVAILABLE."""
    port = free_port()
    args = [sys.executable, "-m", "model_server", f"--rest_api_port={port}", "--port=0"]
    if model_name:
        args.append(f"--model_name={model_name}")
    if model_base_path:
        args.append(f"--model_base_path={Path(model_base_path).resolve()}")
    args += list(extra_args)
    server = spawn(args, port, env)
    try:
        target = wait_for or model_name
        if target:
            wait_until(server, f"/v1/models/{target}", timeout, model_available(target))
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def start_gateway(env: Mapping[str, str] | None = None, workers: int = 1, threads: int = 4,
                  timeout: float = 30.0, wait_path: str = "/healthz",
                  extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Run the gateway under gunicorn (its production server) on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--threads", str(threads), "--graceful-timeout", "10", *extra_args, "flask_server.app:create_app()"]
    server = spawn(args, port, env)
    try:
        wait_until(server, wait_path, timeout)
        yield server
    finally:
        server.stop()
