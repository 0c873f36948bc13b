"""The response cache: answers repeated images from memory or Redis (``GATEWAY_CACHE``, off by default).

Triton and MLServer answer repeats from a response cache; TF Serving has none
(tensorflow/serving#465). The same product photo classified again, a retry, or a page that posts
again costs the gateway a decode and the model server a full inference; from the cache it costs
a hash of the request's bytes and one lookup.

Settings:

- ``GATEWAY_CACHE=memory://?size=N``: an LRU of N entries in each gateway process (each gunicorn
  worker has its own); ``size`` defaults to ``DEFAULT_MEMORY_SIZE``.
- ``GATEWAY_CACHE=redis://host:6379/0`` (also ``rediss://``, ``unix://``): shared by every worker and
  replica; may be the Redis the rate limits use (keys start with ``KEY_PREFIX``). Entries expire
  after ``GATEWAY_CACHE_TTL`` seconds (Redis's ``maxmemory-policy allkeys-lru`` bounds its memory).
  A Redis that fails is skipped for ``REDIS_RETRY_AFTER`` seconds: requests are then answered by the
  model server, never failed, and ``gateway_cache_errors_total`` counts it.

What one entry holds: the top-k classes of one image. Its key (``entry_key``) is built from

- the route and a digest of everything else that changes the answer (``answer_identity``: the
  model name, server, signature, input format and size, preprocessing, interpolation, labels...),
- the model version the gateway resolved for this request, so a newly loaded version never answers
  from an older version's entries (it misses, then fills its own),
- ``k``, and the SHA-256 of the image file's bytes.

The prediction pipeline answers a request from the cache only when every image in it hits (``X-Cache:
hit``); otherwise the whole request goes to the model server (``X-Cache: miss``) and each image's
answer is stored. So one answer never mixes versions. Only answers are stored, never errors: an
error raises before anything is written.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from flask import Flask, Response, g

from flask_server.config import DEFAULT_CACHE_TTL, ConfigError, GatewayConfig
from flask_server.metrics import CACHE_RESULT_ATTR, observe_cache_error

logger = logging.getLogger(__name__)

SETTING = "GATEWAY_CACHE"
MEMORY_SCHEME = "memory"
REDIS_SCHEMES = ("redis", "rediss", "unix")
SIZE_PARAM = "size"
DEFAULT_MEMORY_SIZE = 1024
#: Response header saying whether the answer came from the cache.
CACHE_HEADER = "X-Cache"
HIT = "hit"
MISS = "miss"
#: Every Redis key this cache writes starts with this; the number changes with the entry format.
KEY_PREFIX = "gateway:cache:1:"
#: Seconds to wait for Redis before answering without it.
REDIS_TIMEOUT = 0.5
#: Seconds a failed Redis is left alone before the cache tries it again.
REDIS_RETRY_AFTER = 5.0
EXTENSION_KEY = "gateway_response_cache"
# Hex digits of the answer identity kept in keys: 64 bits, no collision among a gateway's routes.
_IDENTITY_CHARS = 16

#: One image's answer: its top-k classes as the gateway renders them (``{"wnid", "label", "score"}``).
Answer = list[dict[str, Any]]


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


def open_cache(url: str, ttl: float = DEFAULT_CACHE_TTL,
               on_error: Callable[[], None] = lambda: None) -> ResponseCache | None:
    """The cache ``GATEWAY_CACHE`` names, or None when it is empty (the cache is off).

    :raise ConfigError: an unknown scheme, a memory cache with a bad or unknown parameter.
    """
    url = url.strip()
    if not url:
        return None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == MEMORY_SCHEME:
        return MemoryCache(_memory_size(parsed, url))
    if parsed.scheme in REDIS_SCHEMES:
        return RedisCache(url, ttl, on_error)
    raise ConfigError(f"{SETTING}: expected memory://?size=N or a redis:// URL, got {url!r}")


def _memory_size(parsed: urllib.parse.SplitResult, url: str) -> int:
    params = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = set(params) - {SIZE_PARAM}
    if parsed.netloc or parsed.path or unknown:
        raise ConfigError(f"{SETTING}: a memory cache takes only ?{SIZE_PARAM}=N, got {url!r}")
    raw = params.get(SIZE_PARAM, [str(DEFAULT_MEMORY_SIZE)])[-1]
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"{SETTING}: {SIZE_PARAM} must be a positive number of entries, got {raw!r}")
    return size


def answer_identity(settings: Mapping[str, Any]) -> str:
    """A short digest of everything besides the version, ``k`` and the image that changes an answer.

    ``settings`` must be JSON-serialisable after ``str`` of odd values (tuples become lists); key
    order does not matter.
    """
    canonical = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:_IDENTITY_CHARS]


def image_digest(image: bytes) -> str:
    """SHA-256 of an image file's bytes (the bytes the client sent, after base64 decoding)."""
    return hashlib.sha256(image).hexdigest()


def entry_key(route: str, identity: str, version: int, k: int, image: bytes) -> str:
    """The key of one image's answer from ``version`` of the model at ``route`` (module doc)."""
    return f"{KEY_PREFIX}{route}:{identity}:v{version}:k{k}:{image_digest(image)}"


@dataclasses.dataclass(frozen=True)
class CachedModel:
    """The cache as one route's pipeline uses it: its route and answer identity are fixed."""

    cache: ResponseCache
    route: str
    identity: str

    def keys(self, version: int, k: int, images: Sequence[bytes]) -> list[str]:
        """One key per image."""
        return [entry_key(self.route, self.identity, version, k, image) for image in images]

    def lookup(self, keys: Sequence[str]) -> list[Answer] | None:
        """Every image's answer if all of them are stored, else None (a miss)."""
        values = self.cache.get_many(keys)
        if any(value is None for value in values):
            return None
        try:
            return [orjson.loads(value) for value in values]  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            logger.warning("response cache: unreadable entry under %s; answering without it", KEY_PREFIX)
            return None

    def store(self, keys: Sequence[str], answers: Sequence[Answer]) -> None:
        """Store each image's answer under its key."""
        self.cache.set_many({key: orjson.dumps(answer) for key, answer in zip(keys, answers, strict=True)})


def init_app(app: Flask, config: GatewayConfig) -> ResponseCache | None:
    """Open ``config.cache`` for ``app`` (None: off) and add ``X-Cache`` to answered predictions.

    Must run before the model registry is built, which hands the cache to each route's pipeline.

    :raise ConfigError: see ``open_cache``.
    """
    cache = open_cache(config.cache, config.cache_ttl, on_error=observe_cache_error)
    app.extensions[EXTENSION_KEY] = cache
    if cache is not None:
        app.after_request(_add_cache_header)
    return cache


def get_cache(app: Flask) -> ResponseCache | None:
    """The cache ``init_app`` opened for ``app`` (None: off, or not initialised)."""
    return app.extensions.get(EXTENSION_KEY)


def record_result(result: str | None) -> None:
    """Remember this request's HIT or MISS (None: the cache is off) for the header and the metrics."""
    if result is not None:
        setattr(g, CACHE_RESULT_ATTR, result)


def _add_cache_header(response: Response) -> Response:
    result = g.get(CACHE_RESULT_ATTR)
    if result is not None:
        response.headers[CACHE_HEADER] = result
    return response
