"""A throwaway redis-server on 127.0.0.1 for tests of limits shared between processes.

Typical use::

    with start_redis() as redis_url:   # "redis://127.0.0.1:<port>/0"
        ...

or the ``redis_url`` fixture below (import it into a test module). No persistence, no snapshot file.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.processes import free_port, spawn

REDIS_BINARY = "redis-server"
START_TIMEOUT = 10.0


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def start_redis() -> Iterator[str]:
    """Run ``redis-server`` on a free port until the block ends; yield its ``redis://`` URL."""
    binary = shutil.which(REDIS_BINARY)
    if binary is None:
        pytest.skip(f"{REDIS_BINARY} not installed (make system-deps installs it)")
    port = free_port()
    server = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(port):
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{server.log()[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server shared by the session's tests; each test should use its own key space."""
    with start_redis() as url:
        yield url
