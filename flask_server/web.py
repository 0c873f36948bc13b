"""The browser-facing pages: the classifier page at ``/`` and the API docs at ``/docs``.

Both are static files from ``flask_server/static/`` (plain HTML, CSS and JavaScript, no build step,
nothing from a CDN); their assets are served under ``/ui/``. They call the same public API as any
client, so they are never gated by API keys themselves.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response

from flask_server.config import GatewayConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_URL_PATH = "/ui"
INDEX_PAGE = "index.html"
DOCS_PAGE = "docs.html"

bp = Blueprint("web", __name__, static_folder=str(STATIC_DIR), static_url_path=ASSETS_URL_PATH)


@bp.get("/")
def index() -> Response:
    """The classifier page."""
    return bp.send_static_file(INDEX_PAGE)


@bp.get("/docs")
def docs() -> Response:
    """The API reference, rendered in the browser from ``/openapi.json``."""
    return bp.send_static_file(DOCS_PAGE)


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Serve the pages and their assets."""
    app.register_blueprint(bp)
