"""Real server processes for end-to-end tests: 127.0.0.1, ephemeral ports, bounded waits.

Typical use in a test (``model_server_factory`` is tests/conftest.py's fixture over
``launch_model_server``; it also stops whatever a test forgot to stop)::

    with model_server_factory(model_name="tiny", model_base_path=path) as ms:
        requests.get(ms.url + "/v1/models/tiny")
    with start_gateway({"MODEL_SERVER_URL": ms.url}) as gw:
        requests.get(gw.url + "/healthz")

Thin wrappers over
scripts/processes.py, so the tests start, wait for and stop the servers with the same code and
command lines as ``make run`` (the gateway with flask_server/gunicorn.conf.py).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import requests

from scripts.processes import (LOOPBACK, REPO_ROOT, ChildProcess, free_port, gateway_command, model_server_command,
                               model_state, poll_until)

__all__ = ["REPO_ROOT", "ServerProcess", "free_port", "held_port", "launch_model_server", "model_available",
           "only_line_starting", "port_closed", "run_on_held_port", "spawn", "start_gateway", "wait_until"]

# A stand-in for "something else already listening": another process, so its pid and command are
# what a busy-port message should name.
_LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
time.sleep(600)
"""


class ServerProcess(ChildProcess):
    """A server started by a test on ``port``; ``log()`` returns what it has printed so far."""

    report_lines = 80  # failed waits quote more of the log: it is all a CI failure shows

    def __init__(self, args: Sequence[str], port: int, env: Mapping[str, str] | None = None,
                 cwd: Path = REPO_ROOT) -> None:
        super().__init__(Path(args[0]).name, args, env=env, echo=False, cwd=cwd)
        self.port = port
        self.extra: dict = {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def spawn(args: Sequence[str], port: int, env: Mapping[str, str] | None = None,
          cwd: Path = REPO_ROOT) -> ServerProcess:
    """Start ``args`` in its own process group with output to a temp log file."""
    return ServerProcess(args, port, env, cwd)


def wait_until(server: ServerProcess, path: str, timeout: float = 60.0,
               ok: Callable[[requests.Response], bool] = lambda r: r.status_code == 200) -> requests.Response:
    """Poll ``server.url + path`` until ``ok(response)``; fail with the server's log otherwise."""
    def state_of(response: requests.Response) -> tuple[str, bool]:
        return f"{response.status_code} {response.text[:300]}", ok(response)

    return poll_until(server.url + path, server, timeout, state_of)[0]


def model_available(name: str) -> Callable[[requests.Response], bool]:
    """A ``wait_until`` predicate: the model has a version AVAILABLE."""
    def ok(response: requests.Response) -> bool:
        return model_state(response)[1]
    ok.__name__ = f"model_available({name})"
    return ok


def launch_model_server(model_name: str | None = None, model_base_path: str | Path | None = None,
                        extra_args: Sequence[str] = (), wait_for: str | None = None, timeout: float = 90.0,
                        env: Mapping[str, str] | None = None, port: int | None = None,
                        poll_wait_seconds: int | None = None, wait: bool = True) -> ServerProcess:
    """Run ``python -m model_server`` on ``port`` (default: a free one) and return it once ready.

    Ready means ``wait_for`` (default ``model_name``) has a version AVAILABLE; with ``wait=False``,
    or neither name, it returns at once. ``poll_wait_seconds=None`` keeps the server's default (1 s).
    A server that fails to become ready is stopped before the error propagates. The result is a
    context manager that stops the server.
    """
    port = port or free_port()
    # Always our server (the tests are about it), whatever tensorflow_model_server is on PATH.
    args = model_server_command(model_name, model_base_path, port, LOOPBACK, poll_wait_seconds=poll_wait_seconds,
                                extra_args=extra_args, real_if_installed=False)
    server = spawn(args, port, env)
    try:
        target = wait_for or model_name
        if wait and target:
            wait_until(server, f"/v1/models/{target}", timeout, model_available(target))
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def start_gateway(env: Mapping[str, str] | None = None, workers: int = 1, threads: int = 4,
                  timeout: float = 30.0, wait_path: str = "/healthz",
                  extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Run the gateway as ``make run`` does (gunicorn, production config) on a free port.

    One worker by default (the config's 2 would double every test's start-up on 2 cores);
    ``workers``/``threads``/``extra_args`` go on gunicorn's command line, which wins over the config.
    """
    port = free_port()
    server = spawn(gateway_command(f"{LOOPBACK}:{port}", workers, threads, extra_args), port, env)
    try:
        wait_until(server, wait_path, timeout)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def held_port(timeout: float = 20.0) -> Iterator[tuple[int, ChildProcess]]:
    """(port, holder): a port on 127.0.0.1 on which another process listens, until the block ends."""
    holder = ChildProcess("listener", [sys.executable, "-c", _LISTENER], echo=False)
    try:
        deadline = time.monotonic() + timeout
        while not holder.log().strip():
            assert holder.alive() and time.monotonic() < deadline, f"listener did not start: {holder.log()}"
            time.sleep(0.05)
        yield int(holder.log().split()[0]), holder
    finally:
        holder.stop()


def port_closed(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) != 0


def run_on_held_port(command: Callable[[int], Sequence[str]], timeout: float,
                     env: Mapping[str, str] | None = None) -> tuple[int, str, int]:
    """Start ``command(port)`` where another process already listens; (exit code, its log, port).

    The server must exit by itself within ``timeout`` s (it is stopped either way).
    """
    with held_port() as (port, _holder):
        server = spawn(command(port), port, env)
        try:
            code = server.popen.wait(timeout)
        finally:
            server.stop()
    return code, server.log(), port


def only_line_starting(log: str, prefix: str) -> str:
    """The one line of ``log`` that starts with ``prefix`` (fails if there are none or several)."""
    lines = [line for line in log.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, log
    return lines[0]
