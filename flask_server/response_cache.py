"""The response cache: answers repeated images from memory or Redis (``GATEWAY_CACHE``, off by default).

Triton and MLServer answer repeats from a response cache; TF Serving has none
(tensorflow/serving#465). The same product photo classified again, a retry, or a page that posts
again costs the gateway a decode and the model server a full inference; from the cache it costs
a hash of the request's bytes and one lookup.

Settings:

- ``GATEWAY_CACHE=memory://?size=N``: an LRU of N entries in each gateway process (each gunicorn
  worker has its own); ``size`` defaults to ``cache_stores.DEFAULT_MEMORY_SIZE``.
- ``GATEWAY_CACHE=redis://host:6379/1`` (also ``rediss://``, ``unix://``): shared by every worker and
  replica; may be the Redis the rate limits use (keys start with ``KEY_PREFIX``; a database of its
  own keeps a cache flush from resetting budgets). Entries expire after ``GATEWAY_CACHE_TTL``
  seconds; Redis's own ``maxmemory`` bounds its memory (deploy/ uses ``volatile-lru``). A Redis that
  fails is skipped for ``cache_stores.REDIS_RETRY_AFTER`` seconds: requests are then answered by the
  model server, never failed, and ``gateway_cache_errors_total`` counts it.

The stores themselves are in cache_stores.py; this module decides what goes in them, under which
keys, and adds ``X-Cache`` to the answers.

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

import dataclasses
import hashlib
import logging
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from flask import Flask, Response, g

from flask_server.cache_stores import DEFAULT_MEMORY_SIZE, MemoryCache, RedisCache, ResponseCache
from flask_server.config import DEFAULT_CACHE_TTL, ConfigError, GatewayConfig
from flask_server.metrics import CACHE_RESULT_ATTR, observe_cache_error

logger = logging.getLogger(__name__)

SETTING = "GATEWAY_CACHE"
MEMORY_SCHEME = "memory"
REDIS_SCHEMES = ("redis", "rediss", "unix")
SIZE_PARAM = "size"
#: Response header saying whether the answer came from the cache.
CACHE_HEADER = "X-Cache"
HIT = "hit"
MISS = "miss"
#: Every Redis key this cache writes starts with this; the number changes with the entry format.
KEY_PREFIX = "gateway:cache:1:"
EXTENSION_KEY = "gateway_response_cache"
# Hex digits of the answer identity kept in keys: 64 bits, no collision among a gateway's routes.
_IDENTITY_CHARS = 16

#: One image's answer: its top-k classes as the gateway renders them (``{"wnid", "label", "score"}``).
Answer = list[dict[str, Any]]


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

    The same in every process (keys are shared through Redis): key order does not matter, tuples
    count as lists and sets as sorted lists. TypeError for values with no canonical form.
    """
    canonical = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_canonical)
    return hashlib.sha256(canonical).hexdigest()[:_IDENTITY_CHARS]


def _canonical(value: Any) -> Any:
    # str() of a set would follow the process's string hash order, which differs between processes.
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"no canonical form for a {type(value).__name__} in the cache key")


def image_digest(image: bytes) -> str:
    """SHA-256 of an image file's bytes (the bytes the client sent, after base64 decoding)."""
    return hashlib.sha256(image).hexdigest()


def entry_key(route: str, identity: str, version: int, k: int, image: bytes) -> str:
    """The key of one image's answer from ``version`` of the model at ``route`` (module doc)."""
    return f"{KEY_PREFIX}{route}:{identity}:v{version}:k{k}:{image_digest(image)}"


@dataclasses.dataclass(frozen=True)
class CachedModel:
    """The cache as one route's pipeline uses it."""

    cache: ResponseCache
    route: str

    def keys(self, identity: str, version: int, k: int, images: Sequence[bytes]) -> list[str]:
        """One key per image (``identity``: ``answer_identity`` of the version's settings)."""
        return [entry_key(self.route, identity, version, k, image) for image in images]

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
