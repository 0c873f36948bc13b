"""A throwaway ``redis-server`` on 127.0.0.1 and a free port: no persistence, no snapshot file.

For the benchmark (bench/cache.py) and the tests (tests/support/redis_server.py), which need a real
Redis for limits and cache entries shared between processes. Typical use::

    with start_redis_server() as url:   # "redis://127.0.0.1:<port>/0"
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from scripts.processes import LOOPBACK, ChildProcess, free_port

REDIS_BINARY = "redis-server"
START_TIMEOUT = 10.0
NOT_INSTALLED = f"{REDIS_BINARY} not installed (make system-deps installs it)"


class RedisNotInstalled(FileNotFoundError):
    """There is no ``redis-server`` on PATH (``make system-deps`` installs it)."""


def answers_ping(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING with PONG."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def start_redis_server(log_path: Path | None = None) -> Iterator[str]:
    """Run ``redis-server`` until the block ends; yield its ``redis://`` URL.

    :raise RedisNotInstalled: no ``redis-server`` binary.
    :raise RuntimeError: it did not answer PING within ``START_TIMEOUT`` seconds.
    """
    binary = shutil.which(REDIS_BINARY)
    if binary is None:
        raise RedisNotInstalled(NOT_INSTALLED)
    port = free_port()
    server = ChildProcess(REDIS_BINARY, [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "",
                                         "--appendonly", "no"], echo=False, log_path=log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(port):
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{REDIS_BINARY} did not start:\n{server.tail()}")
            time.sleep(0.05)
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        server.stop()
