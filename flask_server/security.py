"""API keys, per-key rate limits and a per-address budget of failed key attempts for the ``api``
blueprint.

Keys come from ``GatewayConfig.api_keys`` (``key`` or ``key:tier``, comma-separated) and/or the
file ``api_keys_file`` (one per line, ``#`` comments). With no keys at all, auth is off and nothing
is rate limited: limits are per key, and a per-address limit would throttle every client behind one
proxy or NAT as a single client. Such a gateway belongs on a trusted network or behind a proxy that
limits per address. Flask-Limiter (a large share of the gateway's start-up time) is then never
imported; ``init_app`` imports it only when a limit applies.

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

Key guessing: every unknown key (403) spends one attempt of the client address's budget
(``GATEWAY_AUTH_FAILURE_LIMIT``, default 30/minute, same storage). Once it is spent, every ``api``
request from that address gets 429 with ``Retry-After`` before its key is looked at, so a right guess
cannot be told from a wrong one until the window moves on. Clients sharing an address share the
budget. While the storage is unreachable and Flask-Limiter has not yet switched to its in-memory
fallback, attempts are not counted (the 403 still stands).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized

from flask_server.config import ConfigError, GatewayConfig

if TYPE_CHECKING:  # imported at run time only when a limit applies (see module doc)
    from flask_limiter import Limiter
    from limits import RateLimitItem

logger = logging.getLogger(__name__)

API_BLUEPRINT = "api"
API_KEY_HEADER = "X-API-Key"
BEARER_PREFIX = "bearer "
DEFAULT_TIER = "default"
#: One shared counter for every route of the blueprint, so a key's budget is per key, not per route.
RATE_LIMIT_SCOPE = "api"
#: Storage namespace of the per-address count of unknown keys.
AUTH_FAILURE_SCOPE = "auth-failures"
#: Prefix of every rate-limit storage key this gateway writes.
RATE_LIMIT_KEY_PREFIX = "gateway"
FINGERPRINT_CHARS = 12
KEYS_EXTENSION = "gateway_keys"
LIMITER_EXTENSION = "gateway_limiter"
#: Headers of rate-limited answers (Flask-Limiter's names), which browser clients must be able to read.
RETRY_AFTER_HEADER = "Retry-After"
RATE_LIMIT_HEADERS = (RETRY_AFTER_HEADER, "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
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


def parse_limits(spec: str, setting: str) -> list[RateLimitItem]:
    """A Flask-Limiter limit string (``30/minute``, or several: ``30/minute,200/day``) -> limits items.

    Imports ``limits`` here, not at module level (see module doc).

    :raise ConfigError: the string is not a limit.
    """
    from limits import parse_many

    try:
        return parse_many(spec)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from exc


class FailedAttempts:
    """The per-address budget of unknown-key attempts (module doc), counted in the limiter's storage.

    ``limiter.limiter`` is Flask-Limiter's current strategy: the configured storage, or its in-memory
    fallback once it has found that storage unreachable.
    """

    def __init__(self, limiter: Limiter, limit: str) -> None:
        self.limiter = limiter
        self.limit = limit
        self.items = parse_limits(limit, "GATEWAY_AUTH_FAILURE_LIMIT")

    def check(self) -> None:
        """Raise 429 if the client's address has used up its budget.

        :raise TooManyRequests: with ``Retry-After``, seconds until an attempt is allowed again.
        """
        keys = _client_address_keys()
        try:
            strategy = self.limiter.limiter
            resets = [strategy.get_window_stats(item, *keys).reset_time
                      for item in self.items if not strategy.test(item, *keys)]
        except self.limiter.storage.base_exceptions as exc:
            logger.warning("auth failure budget not checked: rate-limit storage unreachable (%s)", exc)
            return
        if resets:
            raise TooManyRequests(f"too many unknown API keys from this address (limit {self.limit}); "
                                  "try again later", retry_after=max(1, math.ceil(max(resets) - time.time())))

    def spend(self) -> None:
        """Count one unknown-key attempt against the client's address."""
        try:
            for item in self.items:
                self.limiter.limiter.hit(item, *_client_address_keys())
        except self.limiter.storage.base_exceptions as exc:
            logger.warning("auth failure not counted: rate-limit storage unreachable (%s)", exc)


def _client_address_keys() -> tuple[str, ...]:
    return RATE_LIMIT_KEY_PREFIX, AUTH_FAILURE_SCOPE, f"ip:{request.remote_addr or 'unknown'}"


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


def _authenticate(ring: KeyRing, failures: FailedAttempts | None) -> None:
    """before_request (only registered when auth is on): set ``g.api_tier`` and ``g.api_key_id``.

    :raise 429: the client's address has spent its budget of unknown keys (``failures``).
    :raise 401: no key was sent.
    :raise 403: the key is not known (and spends one attempt of the budget).
    """
    if not _is_gated():
        return
    if failures is not None:
        failures.check()
    key = presented_key()
    if key is None:
        raise Unauthorized(f"an API key is required: send it as {API_KEY_HEADER} or Authorization: Bearer",
                           www_authenticate=WWWAuthenticate("bearer", {"realm": "gateway"}))
    tier = ring.tier_of(key)
    g.api_key_id = fingerprint(key)
    if tier is None:
        if failures is not None:
            failures.spend()
        raise Forbidden(f"unknown API key (fingerprint {g.api_key_id})")
    g.api_tier = tier


def _rate_limit_key() -> str:
    # Only asked for authenticated requests (others are exempt), so the key id is set.
    return f"key:{g.get('api_key_id')}"


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
        response.headers.pop(RETRY_AFTER_HEADER, None)
    return response


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Gate the ``api`` blueprint with API keys, per-tier rate limits and the unknown-key budget.

    Must run after the blueprint is registered. With no keys it only records that auth is off (no
    hooks, no limits, no Flask-Limiter import). Otherwise it registers the auth check before
    Flask-Limiter's own hook, so the tier is known when the limit is chosen and unauthenticated
    requests cost nothing.

    :raise ConfigError: a key names a tier that ``GATEWAY_RATE_LIMITS`` does not define, or a limit
        string is invalid.
    """
    api = app.blueprints.get(API_BLUEPRINT)
    if api is None:
        raise RuntimeError(f"security.init_app needs the {API_BLUEPRINT!r} blueprint registered first")
    ring = load_key_ring(config)
    app.extensions[KEYS_EXTENSION] = ring
    if not ring.enabled:
        return
    limits = parse_rate_limits(config.rate_limits)
    # An empty GATEWAY_RATE_LIMITS turns limiting off; otherwise every tier in use needs a limit.
    undefined = sorted(set(ring.tiers) - set(limits)) if limits else []
    if undefined:
        raise ConfigError(f"API keys use tiers {undefined} that GATEWAY_RATE_LIMITS "
                          f"({config.rate_limits!r}) does not define")
    for tier_limit in limits.values():
        parse_limits(tier_limit, "GATEWAY_RATE_LIMITS")
    limiter = _make_limiter(config) if limits or config.auth_failure_limit else None
    failures = FailedAttempts(limiter, config.auth_failure_limit) if limiter and config.auth_failure_limit else None
    app.before_request(lambda: _authenticate(ring, failures))
    if limiter is None:
        return
    # Registered before Flask-Limiter's hooks so it runs after them (after_request runs in reverse).
    app.after_request(_keep_retry_after_for_429)
    limiter.init_app(app)
    if limits:
        limiter.shared_limit(lambda: _tier_limit(limits), scope=RATE_LIMIT_SCOPE,
                             exempt_when=lambda: _limit_exempt(limits),
                             error_message=lambda: f"rate limit of {_tier_limit(limits)} exceeded")(api)
    app.extensions[LIMITER_EXTENSION] = limiter


def _make_limiter(config: GatewayConfig) -> Limiter:
    """A Flask-Limiter (imported here, not at module level: see module doc) on the configured storage."""
    from flask_limiter import Limiter

    # If Redis goes away, each process keeps limiting on its own (memory) and retries Redis with
    # back-off, instead of failing every request; the timeouts keep a dead Redis from stalling them.
    storage_options = REDIS_OPTIONS if config.ratelimit_storage_uri.startswith("redis") else {}
    return Limiter(key_func=_rate_limit_key, storage_uri=config.ratelimit_storage_uri,
                   storage_options=storage_options, in_memory_fallback_enabled=True,
                   headers_enabled=True, strategy="moving-window", key_prefix=RATE_LIMIT_KEY_PREFIX)
