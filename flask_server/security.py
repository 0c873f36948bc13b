"""API keys and per-key rate limits for the ``api`` blueprint.

Keys come from ``GatewayConfig.api_keys`` (``key`` or ``key:tier``, comma-separated) and/or the
file ``api_keys_file`` (one per line, ``#`` comments). With no keys at all, auth is off and clients
are limited per IP address under the ``default`` tier.

A request to the ``api`` blueprint must carry ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``:
none -> 401 with ``WWW-Authenticate: Bearer``; an unknown key -> 403. Keys are compared in constant
time against every known key, and only a short SHA-256 fingerprint ever leaves this module (logs,
rate-limit storage). Limits are Flask-Limiter strings per tier (``GATEWAY_RATE_LIMITS``, e.g.
``default=60/minute;gold=600/minute``), shared by all routes of the blueprint and stored in
``ratelimit_storage_uri`` (``redis://`` shares them between processes). Over the limit -> 429 with
``Retry-After``. If Redis is unreachable, each process falls back to counting in memory until it
is back. An empty ``GATEWAY_RATE_LIMITS`` (settings mapping only: the environment treats an empty
variable as unset) turns limiting off. Health, metrics, docs, the web page and CORS preflights are
never gated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from flask_server.config import ConfigError, GatewayConfig

API_BLUEPRINT = "api"
API_KEY_HEADER = "X-API-Key"
BEARER_PREFIX = "bearer "
DEFAULT_TIER = "default"
#: One shared counter for every route of the blueprint, so a key's budget is per key, not per route.
RATE_LIMIT_SCOPE = "api"
FINGERPRINT_CHARS = 12
KEYS_EXTENSION = "gateway_keys"
LIMITER_EXTENSION = "gateway_limiter"
#: Seconds to wait for the rate-limit Redis before falling back to per-process counting.
REDIS_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
# Domain-separates the fingerprint from any other SHA-256 of the key someone might compute.
_FINGERPRINT_SALT = b"gateway-api-key-fingerprint:"


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """The known keys as SHA-256 digests (never the keys themselves) and each one's tier."""

    digests: tuple[bytes, ...] = ()
    tiers: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """Auth is on as soon as one key is configured."""
        return bool(self.digests)

    def tier_of(self, key: str) -> str | None:
        """The tier of ``key``, or None if unknown; every known key is compared (constant time)."""
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for known, tier in zip(self.digests, self.tiers):
            # No early exit: the time taken must not depend on which key (if any) matched.
            if hmac.compare_digest(digest, known):
                found = tier
        return found


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key, safe for logs and rate-limit storage."""
    return hashlib.sha256(_FINGERPRINT_SALT + key.encode()).hexdigest()[:FINGERPRINT_CHARS]


def parse_key_entries(entries: Iterable[str]) -> list[tuple[str, str]]:
    """``key`` or ``key:tier`` entries -> ``[(key, tier)]``; blanks and ``#`` comments are skipped."""
    parsed = []
    for raw in entries:
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        key, _, tier = entry.partition(":")
        key, tier = key.strip(), tier.strip() or DEFAULT_TIER
        if not key:
            raise ConfigError(f"API key entry has an empty key (tier {tier!r})")
        parsed.append((key, tier))
    return parsed


def load_key_ring(config: GatewayConfig) -> KeyRing:
    """Every key from ``config.api_keys`` and ``config.api_keys_file``.

    :raise ConfigError: the keys file cannot be read.
    """
    entries = parse_key_entries(config.api_keys.split(","))
    if config.api_keys_file:
        try:
            lines = Path(config.api_keys_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"GATEWAY_API_KEYS_FILE: cannot read {config.api_keys_file!r} ({exc})") from exc
        entries += parse_key_entries(lines)
    return KeyRing(tuple(hashlib.sha256(key.encode()).digest() for key, _ in entries),
                   tuple(tier for _, tier in entries))


def parse_rate_limits(spec: str) -> dict[str, str]:
    """``"tier=limit;tier=limit"`` -> ``{tier: limit}``; a limit may hold several, comma-separated.

    :raise ConfigError: an item has no ``=`` or an empty side.
    """
    limits = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        tier, sep, limit = (side.strip() for side in item.partition("="))
        if not (sep and tier and limit):
            raise ConfigError(f"GATEWAY_RATE_LIMITS: expected tier=limit, got {item!r}")
        limits[tier] = limit
    return limits


def presented_key() -> str | None:
    """The key the client sent in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = request.headers.get(API_KEY_HEADER, "").strip()
    if key:
        return key
    authorization = request.headers.get("Authorization", "")
    if authorization[:len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
        return authorization[len(BEARER_PREFIX):].strip() or None
    return None


def _is_gated() -> bool:
    # Preflights carry no credentials by design (the browser strips them), so they must pass.
    return request.blueprint == API_BLUEPRINT and request.method != "OPTIONS"


def _authenticate(ring: KeyRing) -> None:
    """before_request: set ``g.api_tier`` and ``g.api_key_id``, or raise 401/403.

    :raise 401: no key was sent.
    :raise 403: the key is not known.
    """
    if not _is_gated():
        return
    if not ring.enabled:
        g.api_tier, g.api_key_id = DEFAULT_TIER, None
        return
    key = presented_key()
    if key is None:
        raise Unauthorized(f"an API key is required: send it as {API_KEY_HEADER} or Authorization: Bearer",
                           www_authenticate=WWWAuthenticate("bearer", {"realm": "gateway"}))
    tier = ring.tier_of(key)
    g.api_key_id = fingerprint(key)
    if tier is None:
        raise Forbidden(f"unknown API key (fingerprint {g.api_key_id})")
    g.api_tier = tier


def _rate_limit_key() -> str:
    key_id = g.get("api_key_id")
    return f"key:{key_id}" if key_id else f"ip:{request.remote_addr or 'unknown'}"


def _tier_limit(limits: dict[str, str]) -> str:
    # Flask-Limiter may ask for the value before checking exemption; any valid string will do then.
    return limits.get(g.get("api_tier"), next(iter(limits.values())))


def _limit_exempt(limits: dict[str, str]) -> bool:
    return not _is_gated() or g.get("api_tier") not in limits


def auth_enabled(app: Flask) -> bool:
    """Whether ``init_app`` found any API key for ``app``."""
    ring: KeyRing | None = app.extensions.get(KEYS_EXTENSION)
    return ring is not None and ring.enabled


def _keep_retry_after_for_429(response: Response) -> Response:
    # Flask-Limiter sends Retry-After on every limited response; on a 200 it would mislead clients.
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Gate the ``api`` blueprint with API keys and per-tier rate limits.

    Must run after the blueprint is registered. Registers the auth check before Flask-Limiter's own
    hook, so the tier is known when the limit is chosen and unauthenticated requests cost nothing.

    :raise ConfigError: a key names a tier that ``GATEWAY_RATE_LIMITS`` does not define.
    """
    api = app.blueprints.get(API_BLUEPRINT)
    if api is None:
        raise RuntimeError(f"security.init_app needs the {API_BLUEPRINT!r} blueprint registered first")
    ring = load_key_ring(config)
    limits = parse_rate_limits(config.rate_limits)
    # An empty GATEWAY_RATE_LIMITS turns limiting off; otherwise every tier in use needs a limit.
    undefined = sorted(set(ring.tiers) - set(limits)) if limits else []
    if undefined:
        raise ConfigError(f"API keys use tiers {undefined} that GATEWAY_RATE_LIMITS "
                          f"({config.rate_limits!r}) does not define")
    app.extensions[KEYS_EXTENSION] = ring
    app.before_request(lambda: _authenticate(ring))
    if not limits:
        return
    # Registered before Flask-Limiter's hooks so it runs after them (after_request runs in reverse).
    app.after_request(_keep_retry_after_for_429)
    # If Redis goes away, each process keeps limiting on its own (memory) and retries Redis with
    # back-off, instead of failing every request; the timeouts keep a dead Redis from stalling them.
    storage_options = REDIS_OPTIONS if config.ratelimit_storage_uri.startswith("redis") else {}
    limiter = Limiter(key_func=_rate_limit_key, storage_uri=config.ratelimit_storage_uri,
                      storage_options=storage_options, in_memory_fallback_enabled=True,
                      headers_enabled=True, strategy="moving-window", key_prefix="gateway")
    limiter.init_app(app)
    limiter.shared_limit(lambda: _tier_limit(limits), scope=RATE_LIMIT_SCOPE,
                         exempt_when=lambda: _limit_exempt(limits),
                         error_message=lambda: f"rate limit of {_tier_limit(limits)} exceeded")(api)
    app.extensions[LIMITER_EXTENSION] = limiter
