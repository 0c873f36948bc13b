"""Access logs: one line per request, JSON lines that parse, the incoming request id passed through,
model/version/status/latency present, and gunicorn's own logging left alone."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from flask_server.request_log import ACCESS_LOGGER, PACKAGE_LOGGER
from tests.support.processes import start_gateway

MODEL = "imageclassifier"


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` that is a JSON object (gunicorn's own lines are plain text)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def access_lines(text: str) -> list[dict]:
    return [entry for entry in json_lines(text) if entry.get("logger") == ACCESS_LOGGER]


def test_json_lines_carry_the_request_fields(make_app, capsys):
    client = make_app(GATEWAY_LOG_FORMAT="json").test_client()
    capsys.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["X-Request-ID"] == "trace-abc.123"
    [entry] = access_lines(capsys.readouterr().err)
    assert entry["request_id"] == "trace-abc.123"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/healthz", 200)
    assert entry["latency_ms"] >= 0 and entry["bytes_out"] == len(response.data)
    assert entry["client"] == "127.0.0.1" and entry["level"] == "INFO" and entry["ts"]


def test_unsafe_request_ids_are_replaced(make_app, capsys):
    client = make_app(GATEWAY_LOG_FORMAT="json").test_client()
    capsys.readouterr()
    client.get("/healthz", headers={"X-Request-ID": 'bad id "quoted"'})
    [entry] = access_lines(capsys.readouterr().err)
    assert entry["request_id"] and not set(entry["request_id"]) & set(' "')


def test_text_lines_are_readable(make_app, capsys):
    client = make_app().test_client()
    capsys.readouterr()
    client.get("/nope", headers={"X-Request-ID": "r-1"})
    [line] = [line for line in capsys.readouterr().err.splitlines() if ACCESS_LOGGER in line]
    for part in ("request_id=r-1", "method=GET", "path=/nope", "status=404", "latency_ms="):
        assert part in line


def test_error_logs_are_json_too(make_app, capsys):
    client = make_app(GATEWAY_LOG_FORMAT="json").test_client()
    capsys.readouterr()
    client.post("/v1/models/imageclassifier/predict", data=b"x", content_type="text/plain")
    entries = json_lines(capsys.readouterr().err)
    assert {e["logger"] for e in entries} >= {ACCESS_LOGGER, "flask_server.errors"}
    assert all(e["request_id"] if e["logger"] == ACCESS_LOGGER else True for e in entries)


def test_bodies_are_never_logged(make_app, capsys):
    client = make_app(GATEWAY_LOG_FORMAT="json").test_client()
    capsys.readouterr()
    client.post("/v1/models/imageclassifier/predict", json={"b64": "U0VDUkVULUJPRFk="})
    assert "U0VDUkVULUJPRFk" not in capsys.readouterr().err


def test_logging_setup_leaves_other_loggers_alone(make_app):
    gunicorn_error = logging.getLogger("gunicorn.error")
    sentinel = logging.NullHandler()
    gunicorn_error.addHandler(sentinel)
    root_handlers = list(logging.getLogger().handlers)
    try:
        make_app(GATEWAY_LOG_LEVEL="WARNING")
        make_app(GATEWAY_LOG_LEVEL="DEBUG")
        assert sentinel in gunicorn_error.handlers
        assert logging.getLogger().handlers == root_handlers
        package = logging.getLogger(PACKAGE_LOGGER)
        # one handler however many apps were built, and the last app's level
        assert len([h for h in package.handlers if getattr(h, "gateway_handler", False)]) == 1
        assert package.level == logging.DEBUG
    finally:
        gunicorn_error.removeHandler(sentinel)


@pytest.mark.e2e
def test_gunicorn_json_log_has_model_and_version(gateway_env, photo):
    env = {**gateway_env, "GATEWAY_LOG_FORMAT": "json"}
    with start_gateway(env, wait_path="/readyz") as gateway:
        response = requests.post(f"{gateway.url}/v1/models/{MODEL}/predict", data=photo,
                                 headers={"Content-Type": "image/jpeg", "X-Request-ID": "e2e-log-1"}, timeout=30)
        assert response.status_code == 200
        gateway.stop()
        entries = [e for e in access_lines(gateway.log()) if e["request_id"] == "e2e-log-1"]
    assert len(entries) == 1
    [entry] = entries
    assert entry["model"] == MODEL and entry["model_version"] == str(response.json()["model_version"])
    assert entry["status"] == 200 and entry["latency_ms"] > 0
    assert entry["bytes_in"] == len(photo) and entry["bytes_out"] == len(response.content)


@pytest.mark.parametrize("level", ["debug", "WARNING"])
def test_log_level_is_applied(make_app, level):
    make_app(GATEWAY_LOG_LEVEL=level)
    assert logging.getLogger(PACKAGE_LOGGER).level == logging.getLevelName(level.upper())
