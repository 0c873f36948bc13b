"""One id per request: taken from ``X-Request-ID`` when it is safe, generated otherwise.

The id is stored on ``flask.g``, echoed in the ``X-Request-ID`` response header, put in every
error body and log line, and forwarded to the model server, so one request can be followed
through the front end, the gateway and the model server.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# Safe to log and to echo in a header: no spaces, quotes or control characters.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# What get_request_id returns outside a request (start-up, CLI), so log formats never break.
NO_REQUEST_ID = "-"


def init_app(app: Flask) -> None:
    """Assign the id (create_app calls this first, so before any other hook) and echo it on every response."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)


def get_request_id() -> str:
    """The current request's id (assigned on first use), or ``"-"`` outside a request."""
    if not has_request_context():
        return NO_REQUEST_ID
    if "request_id" not in g:
        _assign_request_id()
    return g.request_id


def sanitize_request_id(value: str | None) -> str:
    """``value`` if it is 1-128 characters of ``[A-Za-z0-9._-]``, else a new uuid4 hex."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def _assign_request_id() -> None:
    g.request_id = sanitize_request_id(request.headers.get(REQUEST_ID_HEADER))


def _echo_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = get_request_id()
    return response
