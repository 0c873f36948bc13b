"""A throwaway redis-server on 127.0.0.1 for tests of limits and cache entries shared between processes.

Typical use::

    with start_redis() as redis_url:   # "redis://127.0.0.1:<port>/0"
        ...

or the ``redis_url`` fixture below (import it into a test module). The test is skipped, with the
reason, where redis-server is not installed. The server itself: scripts/redis_process.py.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from scripts.redis_process import NOT_INSTALLED, REDIS_BINARY, start_redis_server


@contextlib.contextmanager
def start_redis() -> Iterator[str]:
    """Run ``redis-server`` on a free port until the block ends; yield its ``redis://`` URL."""
    if shutil.which(REDIS_BINARY) is None:
        pytest.skip(NOT_INSTALLED)
    with start_redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server shared by the session's tests; each test should use its own key space."""
    with start_redis() as url:
        yield url
