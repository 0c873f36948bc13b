"""The gateway's configuration: every setting, its environment variable and its default, in one place.

Settings come from environment variables (or a mapping passed to ``create_app`` in tests); the
multi-model list comes from the TOML file named by ``MODELS_CONFIG`` (see ``model_config.py``).

| variable | default | meaning |
|---|---|---|
| MODEL_SERVER_URL | http://127.0.0.1:9000 | TF Serving REST base URL for models that name none (grpc://host:port: its gRPC API) |
| MODELS_CONFIG | (unset) | path of the multi-model TOML file; unset means the built-in default |
| GATEWAY_MAX_BODY_BYTES | 10485760 | largest request body (413 above) |
| GATEWAY_MAX_IMAGE_PIXELS | 40000000 | largest decoded image, width x height (400 above) |
| GATEWAY_MAX_BATCH_SIZE | 16 | most images in one `instances` request (400 above) |
| GATEWAY_BACKEND_TIMEOUT | 10 | seconds to wait for the model server (504 after) |
| GATEWAY_BACKEND_CONNECT_TIMEOUT | 2 | seconds to connect to the model server (503 after) |
| GATEWAY_BACKEND_POOL_SIZE | 16 | keep-alive connections per model server |
| GATEWAY_DECODE_CONCURRENCY | 1 | images one process decodes at the same time; others wait their turn |
| GATEWAY_CORS_ORIGINS | (empty) | comma-separated origins allowed by CORS; empty: no CORS headers |
| GATEWAY_API_KEYS | (empty) | comma-separated `key` or `key:tier`; with no keys at all, auth and rate limiting are off |
| GATEWAY_API_KEYS_FILE | (unset) | file with one `key` or `key:tier` per line (`#` comments) |
| GATEWAY_RATE_LIMITS | default=60/minute | per-key limits: `tier=limit` pairs separated by `;` (Flask-Limiter syntax); only with keys |
| GATEWAY_AUTH_FAILURE_LIMIT | 30/minute | unknown-key attempts (403) allowed per client IP before its api requests get 429; only with keys |
| GATEWAY_RATELIMIT_STORAGE_URI | memory:// | Flask-Limiter storage, e.g. redis://127.0.0.1:6379/0 |
| GATEWAY_TRUSTED_PROXIES | (empty) | proxies whose `X-Forwarded-For` names the client: hops `N` or addresses/CIDRs |
| GATEWAY_CACHE | (empty) | response cache: `memory://?size=N` (LRU per process) or a Redis URL; empty: off |
| GATEWAY_CACHE_TTL | 3600 | seconds a cached answer lives in Redis (the memory cache is bounded by size instead) |
| GATEWAY_LOG_FORMAT | text | `text` or `json` (one line per request either way) |
| GATEWAY_LOG_LEVEL | INFO | Python logging level |

GATEWAY_TRUSTED_PROXIES: empty or 0 ignores `X-Forwarded-For`; a list (`10.0.0.0/8, 192.0.2.7`)
believes it only from a listed peer; a hop count `N` (Werkzeug's ProxyFix) only fits when nothing
reaches the gateway around the proxies (proxies.py). GATEWAY_CACHE: `size` defaults to 1024 entries;
a Redis URL (`redis://host:6379/1`) is shared by every process and may be the rate limits' server
(response_cache.py).

Rate limits are per API key, so without keys nothing is limited (a gateway exposed without keys needs
a proxy that limits per address) and Flask-Limiter is not even imported; see security.py. In a
settings mapping (tests), an empty GATEWAY_RATE_LIMITS or GATEWAY_AUTH_FAILURE_LIMIT turns that limit
off; in the environment an empty variable means "unset", i.e. the default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

DEFAULT_MODEL_SERVER_URL = "http://127.0.0.1:9000"
GRPC_URL_SCHEME = "grpc://"  # a model server URL with it is called over TF Serving's gRPC API
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_BACKEND_TIMEOUT = 10.0
DEFAULT_BACKEND_CONNECT_TIMEOUT = 2.0
DEFAULT_BACKEND_POOL_SIZE = 16
# One decode at a time per process: decoding is CPU-bound and gunicorn runs one worker per core, so a
# second decode in the same worker gains no throughput, only another full-size image buffer (8 MB for
# a 2 MP photo) per extra thread; measured in bench/README.md.
DEFAULT_DECODE_CONCURRENCY = 1
DEFAULT_RATE_LIMITS = "default=60/minute"
DEFAULT_AUTH_FAILURE_LIMIT = "30/minute"
DEFAULT_RATELIMIT_STORAGE_URI = "memory://"
DEFAULT_CACHE_TTL = 3600.0


class ConfigError(ValueError):
    """A setting has a value the gateway cannot use; raised at start-up, never per request."""


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Settings of one gateway process. Build with ``GatewayConfig.from_env()`` or ``from_mapping()``."""

    model_server_url: str = DEFAULT_MODEL_SERVER_URL
    models_config: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    backend_timeout: float = DEFAULT_BACKEND_TIMEOUT
    backend_connect_timeout: float = DEFAULT_BACKEND_CONNECT_TIMEOUT
    backend_pool_size: int = DEFAULT_BACKEND_POOL_SIZE
    decode_concurrency: int = DEFAULT_DECODE_CONCURRENCY
    cors_origins: tuple[str, ...] = ()
    api_keys: str = ""
    api_keys_file: str | None = None
    rate_limits: str = DEFAULT_RATE_LIMITS
    auth_failure_limit: str = DEFAULT_AUTH_FAILURE_LIMIT
    ratelimit_storage_uri: str = DEFAULT_RATELIMIT_STORAGE_URI
    trusted_proxies: str = ""
    cache: str = ""
    cache_ttl: float = DEFAULT_CACHE_TTL
    log_format: str = "text"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read every setting from ``environ`` (default ``os.environ``); unknown variables are ignored."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = _ENV_NAMES[field.name]
            if name in env and env[name] != "":
                values[field.name] = env[name]
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GatewayConfig:
        """Build from field names (``max_batch_size``) or env names (``GATEWAY_MAX_BATCH_SIZE``)."""
        by_env = {env: field for field, env in _ENV_NAMES.items()}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            field = by_env.get(key, key)
            if field not in _ENV_NAMES:
                raise ConfigError(f"unknown gateway setting {key!r}")
            kwargs[field] = _coerce(field, raw)
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        for name in ("max_body_bytes", "max_image_pixels", "max_batch_size", "backend_pool_size",
                     "decode_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_ENV_NAMES[name]} must be at least 1, got {getattr(self, name)}")
        for name in ("backend_timeout", "backend_connect_timeout", "cache_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_ENV_NAMES[name]} must be positive, got {getattr(self, name)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"GATEWAY_LOG_FORMAT must be 'text' or 'json', got {self.log_format!r}")
        if not self.model_server_url.startswith(("http://", "https://", GRPC_URL_SCHEME)):
            raise ConfigError(f"MODEL_SERVER_URL must be an http(s) URL or grpc://host:port, "
                              f"got {self.model_server_url!r}")


_ENV_NAMES = {
    "model_server_url": "MODEL_SERVER_URL",
    "models_config": "MODELS_CONFIG",
    "max_body_bytes": "GATEWAY_MAX_BODY_BYTES",
    "max_image_pixels": "GATEWAY_MAX_IMAGE_PIXELS",
    "max_batch_size": "GATEWAY_MAX_BATCH_SIZE",
    "backend_timeout": "GATEWAY_BACKEND_TIMEOUT",
    "backend_connect_timeout": "GATEWAY_BACKEND_CONNECT_TIMEOUT",
    "backend_pool_size": "GATEWAY_BACKEND_POOL_SIZE",
    "decode_concurrency": "GATEWAY_DECODE_CONCURRENCY",
    "cors_origins": "GATEWAY_CORS_ORIGINS",
    "api_keys": "GATEWAY_API_KEYS",
    "api_keys_file": "GATEWAY_API_KEYS_FILE",
    "rate_limits": "GATEWAY_RATE_LIMITS",
    "auth_failure_limit": "GATEWAY_AUTH_FAILURE_LIMIT",
    "ratelimit_storage_uri": "GATEWAY_RATELIMIT_STORAGE_URI",
    "trusted_proxies": "GATEWAY_TRUSTED_PROXIES",
    "cache": "GATEWAY_CACHE",
    "cache_ttl": "GATEWAY_CACHE_TTL",
    "log_format": "GATEWAY_LOG_FORMAT",
    "log_level": "GATEWAY_LOG_LEVEL",
}


def _coerce(field: str, raw: Any) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(GatewayConfig)}[field]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(item.strip() for item in items if item.strip())
        if kind == "str | None":
            return None if raw is None else str(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_ENV_NAMES[field]}: cannot use {raw!r} ({exc})") from exc
