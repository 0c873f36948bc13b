"""Where the response cache keeps its entries: bytes by key, in this process (``MemoryCache``, an
LRU bounded by a number of entries) or in Redis (``RedisCache``, entries with a TTL, shared by every
process that names the same server). Neither raises for storage trouble: a failed Redis read is a
miss, a failed write is skipped, and a failed Redis is left alone for ``REDIS_RETRY_AFTER`` seconds.

What goes in them, and under which keys: response_cache.py.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from flask_server.config import DEFAULT_CACHE_TTL

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_SIZE = 1024
#: Seconds to wait for Redis before answering without it.
REDIS_TIMEOUT = 0.5
#: Seconds a failed Redis is left alone before the cache tries it again.
REDIS_RETRY_AFTER = 5.0


class ResponseCache(Protocol):
    """Where answers are kept: bytes by key. Implementations never raise for storage trouble."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored value of each key, None where there is none (or the storage failed)."""

    def set_many(self, entries: Mapping[str, bytes]) -> None:
        """Store every entry (best effort)."""

    def close(self) -> None:
        """Release connections."""


class MemoryCache:
    """An LRU of at most ``size`` entries, safe to share between a process's threads."""

    def __init__(self, size: int = DEFAULT_MEMORY_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``ResponseCache``; a hit becomes the most recently used entry."""
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                value = self._entries.get(key)
                if value is not None:
                    self._entries.move_to_end(key)
                found.append(value)
        return found

    def set_many(self, entries: Mapping[str, bytes]) -> None:
        """See ``ResponseCache``; the least recently used entries go beyond ``size``."""
        with self._lock:
            for key, value in entries.items():
                self._entries[key] = value
                self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def close(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()


class RedisCache:
    """Entries in Redis with a TTL, shared by every gateway process that names the same server.

    ``on_error`` is called once per failed operation (the gateway counts them in its metrics).
    """

    def __init__(self, url: str, ttl: float = DEFAULT_CACHE_TTL, on_error: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis  # only when a Redis cache is configured (start-up time; see security.py)

        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT,
                                           socket_connect_timeout=REDIS_TIMEOUT)
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.ttl_ms = max(1, round(ttl * 1000))
        self.on_error = on_error
        self.clock = clock
        self._skip_until = 0.0

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``ResponseCache``: one MGET."""
        if not keys or not self._usable():
            return [None] * len(keys)
        try:
            return list(self.client.mget(keys))
        except self.errors as exc:
            self._failed("read", exc)
            return [None] * len(keys)

    def set_many(self, entries: Mapping[str, bytes]) -> None:
        """See ``ResponseCache``: one pipelined SET ... PX ttl per entry."""
        if not entries or not self._usable():
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value, px=self.ttl_ms)
                pipe.execute()
        except self.errors as exc:
            self._failed("write", exc)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _usable(self) -> bool:
        return self.clock() >= self._skip_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        # A Redis that hangs would otherwise add its timeout to every request until it is back.
        self._skip_until = self.clock() + REDIS_RETRY_AFTER
        logger.warning("response cache %s failed, answering without it for %g s: %s",
                       operation, REDIS_RETRY_AFTER, exc)
        self.on_error()
