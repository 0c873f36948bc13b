"""The gateway's application factory.

Production: ``gunicorn "flask_server.app:create_app()"``. Development, as in the tutorial::

    cd flask_server && flask run --host=0.0.0.0     # http://127.0.0.1:5000

Flask's CLI finds ``create_app`` here and calls it with no arguments, so settings come from the
environment (see config.py). Nothing is read or built at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if not __package__:  # pragma: no cover - `flask run` inside flask_server/ imports this file as "app"
    # The package is normally installed (pip install -e .); this keeps a bare checkout working too.
    _REPO_ROOT = str(Path(__file__).resolve().parents[1])
    if _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)

from flask import Flask  # noqa: E402 (after the sys.path fix above)

from flask_server import errors, proxies, registry, request_id, response_cache, routes, security  # noqa: E402
from flask_server.config import GatewayConfig  # noqa: E402

PACKAGE = "flask_server"
# Preflight answers may be cached by browsers this long (seconds).
CORS_MAX_AGE = 600
# Response headers a browser page may read cross-origin (CORS hides all but a few by default).
CORS_EXPOSE_HEADERS = (request_id.REQUEST_ID_HEADER, response_cache.CACHE_HEADER, *security.RATE_LIMIT_HEADERS)


def create_app(config: GatewayConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the gateway: config -> model registry -> blueprints -> error handling -> extensions.

    ``config`` is a GatewayConfig, a mapping of settings (field or env names; tests), or None to
    read the environment. Raises ConfigError for unusable settings or a bad MODELS_CONFIG.
    """
    if config is None:
        config = GatewayConfig.from_env()
    elif not isinstance(config, GatewayConfig):
        config = GatewayConfig.from_mapping(config)

    # The package name, not __name__: `flask run` imports this module as "app", and static files
    # and templates must resolve to flask_server/ either way.
    app = Flask(PACKAGE)
    # Outermost, so every hook and view (logs, metrics, per-address limits) sees the real client.
    app.wsgi_app = proxies.wrap(app.wsgi_app, config.trusted_proxies)  # type: ignore[method-assign]
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        # Flask's default (500 kB) would reject the tutorial's form-encoded base64 of a normal photo.
        MAX_FORM_MEMORY_SIZE=config.max_body_bytes,
    )
    request_id.init_app(app)
    errors.init_app(app)
    response_cache.init_app(app, config)  # before the registry, whose pipelines use it
    registry.init_app(app, config)
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.health_bp)
    if config.cors_origins:
        from flask_cors import CORS  # only when configured: nothing imported that is not used

        CORS(app, origins=list(config.cors_origins), expose_headers=list(CORS_EXPOSE_HEADERS),
             max_age=CORS_MAX_AGE)

    # Cross-cutting features, in this order: logging sees every request, metrics count what
    # security rejects, and security must find the "api" blueprint already registered.
    from flask_server import metrics, openapi, request_log, web

    for extension in (request_log, metrics, security, openapi, web):
        extension.init_app(app, config)
    return app
