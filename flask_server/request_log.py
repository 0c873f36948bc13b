"""One log line per request, as readable text or as one JSON object per line.

Each line carries the request id, method, path, model, model version, status, latency in ms, bytes
in and out, the client address and, when auth is on, the API key's fingerprint. Never the key
itself, never a body. ``GATEWAY_LOG_FORMAT=json`` switches every ``flask_server.*`` logger to JSON
lines; ``GATEWAY_LOG_LEVEL`` sets their level.

Logging set-up touches only the ``flask_server`` logger (one handler to stderr, replaced rather than
added on each ``create_app``), so gunicorn's own loggers and the root logger keep their handlers.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from typing import Any

from flask import Flask, Response, g, request

from flask_server.config import GatewayConfig
from flask_server.request_id import get_request_id

PACKAGE_LOGGER = "flask_server"
ACCESS_LOGGER = "flask_server.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Fields of an access record, in the order the text format prints them.
ACCESS_FIELDS = ("request_id", "method", "path", "status", "latency_ms", "model", "model_version",
                 "bytes_in", "bytes_out", "client", "api_key_id")


def request_start_time() -> float:
    """``perf_counter()`` when the first gateway hook saw this request; shared by logs and metrics."""
    return g.setdefault("request_started", time.perf_counter())


def request_latency() -> float:
    """Seconds since ``request_start_time()``."""
    return time.perf_counter() - request_start_time()


def response_model(response: Response) -> tuple[str | None, str | None]:
    """(model, version) that served this request: from ``g`` set by the views, else the JSON body.

    Parsed at most once per request; error responses and bare-list bodies give what ``g`` has.
    """
    if "response_model" not in g:
        model, version = g.get("model_name"), g.get("model_version")
        # Fallback for views that do not set g: only predictions name a model in their body.
        if (model is None and request.blueprint == "api" and response.status_code == 200
                and response.is_json and not response.is_streamed):
            body = response.get_json(silent=True)
            if isinstance(body, dict):
                model, version = body.get("model"), body.get("model_version")
        g.response_model = (None if model is None else str(model), None if version is None else str(version))
    return g.response_model


def response_size(response: Response) -> int:
    """Bytes in the response body, as sent in Content-Length (0 when streamed without one)."""
    return response.content_length or 0


def access_record(response: Response) -> dict[str, Any]:
    """The fields of the access line for the current request and its response."""
    model, version = response_model(response)
    return {
        "request_id": get_request_id(),
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "latency_ms": round(request_latency() * 1000, 2),
        "model": model,
        "model_version": version,
        "bytes_in": request.content_length or 0,
        "bytes_out": response_size(response),
        "client": request.remote_addr,
        "api_key_id": g.get("api_key_id"),
    }


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, plus the access fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            # An access record's fields follow as keys; repeating them in the message is noise.
            "message": f"{access['method']} {access['path']} {access['status']}" if access else record.getMessage(),
        }
        entry.update(access or {})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so test capture swaps don't leave a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(config: GatewayConfig) -> None:
    """Give the ``flask_server`` logger exactly one stderr handler in ``config.log_format``."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(config.log_level.upper())
    for handler in [h for h in logger.handlers if getattr(h, "gateway_handler", False)]:
        logger.removeHandler(handler)
    handler = _CurrentStderrHandler()
    handler.gateway_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonLineFormatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logger.addHandler(handler)


def _text_message(record: dict[str, Any]) -> str:
    return " ".join(f"{name}={record[name]}" for name in ACCESS_FIELDS if record[name] is not None)


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Configure logging and log one access line after every request."""
    configure_logging(config)
    logger = logging.getLogger(ACCESS_LOGGER)

    @app.before_request
    def _start_clock() -> None:
        request_start_time()

    @app.after_request
    def _log_request(response: Response) -> Response:
        record = access_record(response)
        logger.info(_text_message(record), extra={"access": record})
        return response
