"""The gateway's error tree and the one handler that renders every error as JSON.

Code anywhere in a request raises; ``init_app`` registers a single handler that turns the exception
into ``{"error": "<message>", "request_id": "<id>"}`` with the status below, and logs one line::

    GatewayError                     500  base class; never raised itself
    +-- BadRequest                   400  bad base64, not an image, bad JSON, wrong JSON types,
    |                                     unknown top-level JSON fields, batch too big, bad top_k
    +-- ModelNotFound                404  no model of that name is configured in the gateway
    +-- UnsupportedMediaType         415  a Content-Type the route cannot read
    +-- BackendError                      the model server could not give an answer
        +-- BadModelServerReply      502  non-JSON or unexpected reply, or it rejected what we sent
        +-- ModelServerUnavailable   503  connection refused/reset/connect timeout, or it said 503
        +-- ModelNotAvailable        503  the model server has no AVAILABLE version of the model
        +-- ModelServerTimeout       504  no reply within GATEWAY_BACKEND_TIMEOUT

Werkzeug's HTTP exceptions (404 unknown route, 405, 413 for a body over GATEWAY_MAX_BODY_BYTES,
429 from the rate limiter...) go through the same handler and keep their status and headers. Anything else is a bug:
500 with a generic message, logged with its traceback, never echoed to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from flask_server.request_id import get_request_id

logger = logging.getLogger(__name__)

ERROR_KEY = "error"
REQUEST_ID_KEY = "request_id"
INTERNAL_ERROR_MESSAGE = "internal server error; the gateway log has details under this request_id"
# Longest fragment of client input quoted back in a message.
QUOTE_LIMIT = 60
# Longest piece of a model server reply quoted in a message.
REPLY_QUOTE_LIMIT = 200


class GatewayError(Exception):
    """Base of every error the gateway reports on purpose; ``status`` is its HTTP status.

    ``message`` is what the client reads. ``detail`` is what only the log may hold, such as the
    model server's internal URL: ``log_message`` (and ``str()``) joins the two.
    """

    status = 500

    def __init__(self, message: str, detail: str | None = None) -> None:
        self.message = message
        self.detail = detail
        super().__init__(self.log_message)

    @property
    def log_message(self) -> str:
        """The client's message plus the internal detail, for logs only."""
        return self.message if self.detail is None else f"{self.message} [{self.detail}]"


class BadRequest(GatewayError):
    """400: the request body, a field or a query parameter is malformed or out of range."""

    status = 400


class ModelNotFound(GatewayError):
    """404: the URL names a model the gateway is not configured to serve."""

    status = 404


class UnsupportedMediaType(GatewayError):
    """415: the request's Content-Type is not one the route can read."""

    status = 415


class BackendError(GatewayError):
    """The model server did not produce a usable answer (502/503/504 subclasses)."""

    status = 502


class BadModelServerReply(BackendError):
    """502: the model server replied with something unusable, or rejected what the gateway sent
    (which means the gateway's model configuration does not match the model)."""

    status = 502


class ModelServerUnavailable(BackendError):
    """503: the model server cannot be reached (refused, reset, connect timeout) or answered 503."""

    status = 503


class ModelNotAvailable(BackendError):
    """503: the model server is up but has no AVAILABLE version of the model (not loaded yet, unknown)."""

    status = 503


class ModelServerTimeout(BackendError):
    """504: the model server did not answer within the read timeout."""

    status = 504


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a client- or upstream-supplied value (bytes shown as text), truncated, for messages."""
    text = repr(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote_reply(value: object) -> str:
    """``quote`` for a model server's reply (or part of one): a longer limit, since it is the evidence."""
    return quote(value, REPLY_QUOTE_LIMIT)


def init_app(app: Flask) -> None:
    """Register the single error handler for every exception a view can raise."""
    app.register_error_handler(Exception, handle_error)


def handle_error(exc: Exception) -> Response:
    """Render ``exc`` as ``{"error", "request_id"}`` with its status, logging one line."""
    request_id = get_request_id()
    if isinstance(exc, HTTPException):
        if exc.code is None or exc.code < 400:  # routing redirects (e.g. a missing trailing slash)
            return exc.get_response()
        status, message = exc.code, exc.description or exc.name
        log_message = message
    elif isinstance(exc, GatewayError):
        status, message, log_message = exc.status, exc.message, exc.log_message
    else:
        logger.exception("request_id=%s status=500 unhandled %s", request_id, type(exc).__name__)
        return _render(500, INTERNAL_ERROR_MESSAGE, request_id)
    log = logger.error if status >= 500 else logger.warning
    log("request_id=%s status=%d error=%s", request_id, status, log_message)
    response = _render(status, message, request_id)
    if isinstance(exc, HTTPException):
        # Keep the exception's own headers, such as Allow (405) and Retry-After (429).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
    return response


def _render(status: int, message: str, request_id: str) -> Response:
    response = jsonify({ERROR_KEY: message, REQUEST_ID_KEY: request_id})
    response.status_code = status
    return response
