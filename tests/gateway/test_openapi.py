"""/openapi.json describes every API route and error the code has, and schemathesis, run against a
real gunicorn gateway and model server, finds no 5xx and no response that breaks the schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_server import errors
from flask_server.openapi import API_KEY_SCHEME, BEARER_SCHEME, OPENAPI_PATH, PREDICT_ERRORS
from flask_server.security import API_KEY_HEADER
from tests.support.processes import REPO_ROOT, start_gateway

SCHEMATHESIS_KEY = "schemathesis-key"
SCHEMATHESIS_SECONDS = 30
# Endpoints that are API surface (everything else is pages and assets).
DOCUMENTED_ENDPOINTS = re.compile(r"^(api|health)\.|^metrics$")
REPORT_DIR = REPO_ROOT / "test-artifacts" / "schemathesis"


def _template(path: str) -> str:
    """``/v1/models/<model_route>/predict`` and ``/v1/models/{model}/predict`` -> ``/v1/models/{}/predict``."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_api_route_is_documented(make_app):
    app = make_app()
    spec = app.test_client().get(OPENAPI_PATH).json
    documented = {(_template(path), method.upper()) for path, item in spec["paths"].items() for method in item}
    served = {(_template(rule.rule), method) for rule in app.url_map.iter_rules()
              if DOCUMENTED_ENDPOINTS.search(rule.endpoint) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented


def test_every_error_status_is_documented_for_predictions(make_app):
    spec = make_app(GATEWAY_API_KEYS="k").test_client().get(OPENAPI_PATH).json
    statuses = {str(cls.status) for cls in vars(errors).values()
                if isinstance(cls, type) and issubclass(cls, errors.GatewayError) and cls is not errors.GatewayError}
    assert statuses - {"500"} <= set(PREDICT_ERRORS)
    responses = spec["paths"]["/v1/models/{model}/predict"]["post"]["responses"]
    assert set(PREDICT_ERRORS) | {"200", "401", "403", "429"} <= set(responses)
    assert responses["429"]["headers"]["Retry-After"]["required"]
    for status, response in responses.items():
        if status != "200":
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_security_schemes_only_when_keys_are_on(make_app):
    off = make_app().test_client().get(OPENAPI_PATH).json
    on = make_app(GATEWAY_API_KEYS="k").test_client().get(OPENAPI_PATH).json
    assert "securitySchemes" not in off["components"]
    assert "security" not in off["paths"]["/v1/models"]["get"]
    schemes = on["components"]["securitySchemes"]
    assert schemes[API_KEY_SCHEME] == {**schemes[API_KEY_SCHEME], "type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    assert schemes[BEARER_SCHEME]["scheme"] == "bearer"
    assert on["paths"]["/v1/models"]["get"]["security"] == [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]
    assert "security" not in on["paths"]["/healthz"]["get"]


def test_model_parameter_lists_the_configured_routes(gateway_env):
    from flask_server.app import create_app

    spec = create_app(gateway_env).test_client().get(OPENAPI_PATH).json
    [model] = [p for p in spec["paths"]["/v1/models/{model}/predict"]["post"]["parameters"] if p["name"] == "model"]
    assert set(model["schema"]["enum"]) == {"tiny", "tiny_json", "imageclassifier"}


def test_docs_page_is_served_without_any_cdn(client):
    with client.get("/docs") as page:
        assert page.status_code == 200 and b"ui/docs.js" in page.data
    for asset in ("/ui/docs.js", "/ui/docs.css"):
        with client.get(asset) as response:  # a streamed file: close it, as a WSGI server would
            assert response.status_code == 200
    assert not re.search(rb"(src|href)=\"(https?:)?//", page.data)


@pytest.mark.e2e
def test_schemathesis_finds_no_server_errors_or_schema_violations(gateway_env):
    env = {**gateway_env, "GATEWAY_API_KEYS": SCHEMATHESIS_KEY}
    with start_gateway(env, wait_path="/readyz") as gateway:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", gateway.url + OPENAPI_PATH,
             "--checks", "all",
             # Schema-valid is not enough for a 2xx here: a random base64 string is not an image, so
             # "positive data" is mostly (rightly) a 400. The examples phase sends a real PNG instead.
             "--exclude-checks", "positive_data_acceptance",
             "--header", f"{API_KEY_HEADER}: {SCHEMATHESIS_KEY}",
             "--max-time", str(SCHEMATHESIS_SECONDS), "--max-examples", "25", "--seed", "20240601",
             "--request-timeout", "20", "--no-color", "--warnings", "off",
             "--report", "junit", "--report-dir", str(REPORT_DIR)],
            capture_output=True, text=True, timeout=SCHEMATHESIS_SECONDS + 60, cwd=REPO_ROOT)
        server_log = gateway.log()
    assert result.returncode == 0, f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}\n--- gateway log ---\n{server_log[-3000:]}"
    assert "status=500" not in server_log and "Traceback" not in server_log
