"""The gateway's OpenAPI 3.0 description, written by hand and served at ``GET /openapi.json``.

Built once per app from its configuration: the ``model`` path parameter lists the configured routes,
and the API-key security schemes appear only when keys are configured. ``/docs`` (web.py) renders it.
Keep it in step with routes.py, request_parsing.py and errors.py; tests/gateway/test_openapi.py runs
schemathesis against a live gateway to catch any drift.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from flask import Flask, Response, jsonify

from flask_server.config import GatewayConfig
from flask_server.registry import get_registry
from flask_server.request_id import REQUEST_ID_HEADER
from flask_server.response_cache import CACHE_HEADER, HIT, MISS
from flask_server.security import API_KEY_HEADER, auth_enabled

OPENAPI_PATH = "/openapi.json"
OPENAPI_VERSION = "3.0.3"
DISTRIBUTION = "keras-and-tensorflow-serving"
API_KEY_SCHEME = "ApiKeyHeader"
BEARER_SCHEME = "BearerAuth"
ROUTE_PATTERN = "^[A-Za-z0-9._-]+$"
# An 8x8 orange PNG: a request example that really classifies, so tools can try a successful call.
EXAMPLE_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8UaHBgA0wYRUdtBIAHicBeAYWg8oAAAAASUVORK5CYII="

#: Error statuses every prediction can answer, and what each means here.
PREDICT_ERRORS = {
    "400": "Malformed body (bad JSON, bad base64, not an image, unknown fields, batch too big) or bad top_k.",
    "404": "No model of that name is configured in the gateway.",
    "413": "Body larger than GATEWAY_MAX_BODY_BYTES.",
    "415": "Content-Type the route cannot read.",
    "502": "The model server's reply was unusable, or it rejected what the gateway sent.",
    "503": "The model server is unreachable or has no AVAILABLE version of the model.",
    "504": "The model server did not answer within GATEWAY_BACKEND_TIMEOUT.",
}
AUTH_ERRORS = {
    "401": "No API key sent (only when keys are configured).",
    "403": "Unknown API key.",
    "429": "Rate limit of the key's tier exceeded, or too many unknown keys from the client address; see Retry-After.",
}


#: Headers of a prediction answer.
PREDICTION_HEADERS = {CACHE_HEADER: {
    "required": False, "schema": {"type": "string", "enum": [HIT, MISS]},
    "description": "Only with a response cache (GATEWAY_CACHE): whether this answer came from it."}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error_responses(statuses: dict[str, str]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, description in statuses.items():
        response: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
        if status == "401":
            response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                                        "description": "Bearer realm=\"gateway\""}}
        if status == "429":
            response["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer"},
                                                   "description": "Seconds until the limit allows a request."}}
        responses[status] = response
    return responses


def _schemas() -> dict[str, Any]:
    b64 = {"type": "string", "description": "Base64 of an image file (JPEG, PNG, ...); URL-safe alphabet, "
                                            "missing padding, whitespace and a data: URL prefix are accepted.",
           "example": EXAMPLE_PNG_B64}
    prediction = {"type": "object", "required": ["wnid", "label", "score"],
                  "properties": {"wnid": {"type": "string", "description": "Class id (WordNet id for ImageNet)."},
                                 "label": {"type": "string"},
                                 "score": {"type": "number", "minimum": 0, "maximum": 1}}}
    model_status = {
        "type": "object", "required": ["model", "model_name", "state"],
        "properties": {
            "model": {"type": "string", "description": "Route name, as in /v1/models/{model}/predict."},
            "model_name": {"type": "string", "description": "Name on the model server."},
            "state": {"type": "string", "enum": ["AVAILABLE", "UNAVAILABLE"]},
            "model_version": {"type": "integer"},
            "classes": {"type": "integer", "minimum": 1,
                        "description": "How many classes this version scores: the largest top_k it takes."},
            "warning": {"type": "string"},
            "error": {"type": "string", "description": "Why the model is UNAVAILABLE."},
        }}
    return {
        "Error": {"type": "object", "required": ["error", "request_id"],
                  "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}},
        "B64Image": {"type": "object", "required": ["b64"], "additionalProperties": False,
                     "properties": {"b64": b64}},
        "Instances": {"type": "object", "required": ["instances"], "additionalProperties": False,
                      "properties": {"instances": {"type": "array", "minItems": 1, "items": _ref("B64Image")}}},
        "FileUpload": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}},
        "FormB64": {"type": "object", "required": ["b64"], "properties": {"b64": b64}},
        "Prediction": prediction,
        "PredictResponse": {
            "type": "object", "required": ["model", "model_version", "predictions"],
            "properties": {
                "model": {"type": "string"},
                "model_version": {"type": "integer"},
                "predictions": {"description": "Top-k for one image; for `instances`, one list per image.",
                                "oneOf": [{"type": "array", "items": _ref("Prediction")},
                                          {"type": "array", "items": {"type": "array", "items": _ref("Prediction")}}]},
                "warning": {"type": "string", "description": "Set when the model has untrained weights."},
            }},
        "TutorialResponse": {
            "type": "array", "description": "Top 5 as [wnid, label, score] rows.",
            "items": {"type": "array", "minItems": 3, "maxItems": 3,
                      "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}}},
        "ModelStatus": model_status,
        "ModelList": {"type": "object", "required": ["models"],
                      "properties": {"models": {"type": "array", "items": _ref("ModelStatus")}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Readiness": {"type": "object", "required": ["ready", "models"],
                      "properties": {"ready": {"type": "boolean"},
                                     "models": {"type": "array", "items": _ref("ModelStatus")}}},
    }


def build_spec(routes: list[str], auth: bool, version: str) -> dict[str, Any]:
    """The OpenAPI document for a gateway serving ``routes``, with key auth on or off."""
    model_param = {"name": "model", "in": "path", "required": True,
                   "description": "A model route configured in the gateway (MODELS_CONFIG).",
                   "schema": {"type": "string", "pattern": ROUTE_PATTERN, **({"enum": routes} if routes else {})}}
    top_k_param = {"name": "top_k", "in": "query", "required": False,
                   "description": "How many classes to return (default: the model's top_k, usually 5).",
                   "schema": {"type": "integer", "minimum": 1}}
    security = [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}] if auth else []
    api_errors = AUTH_ERRORS if auth else {}  # limits are per key: no keys, no 429 (security.py)

    def api_operation(summary: str, ok: dict[str, Any], errors: dict[str, str], **extra: Any) -> dict[str, Any]:
        operation = {"summary": summary, "tags": ["api"], "responses": {**ok, **_error_responses({**errors, **api_errors})},
                     **extra}
        if security:
            operation["security"] = security
        return operation

    image_body = {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [_ref("B64Image"), _ref("Instances")]}},
        "multipart/form-data": {"schema": _ref("FileUpload")},
        "application/x-www-form-urlencoded": {"schema": _ref("FormB64")},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }}
    tutorial_body = {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": _ref("FormB64")},
        "application/json": {"schema": _ref("B64Image")},
        "multipart/form-data": {"schema": _ref("FileUpload")},
    }}
    paths = {
        "/v1/models/{model}/predict": {"post": api_operation(
            "Classify one image, or a batch with `instances`.",
            {"200": {"description": "Top-k labels.", "content": _json(_ref("PredictResponse")),
                     "headers": PREDICTION_HEADERS}},
            PREDICT_ERRORS, operationId="predict", parameters=[model_param, top_k_param], requestBody=image_body)},
        "/imageclassifier/predict/": {"post": api_operation(
            "The tutorial's endpoint: form field `b64` -> top 5 as [wnid, label, score] rows.",
            {"200": {"description": "Top 5.", "content": _json(_ref("TutorialResponse")),
                     "headers": PREDICTION_HEADERS}},
            PREDICT_ERRORS, operationId="tutorialPredict", requestBody=tutorial_body)},
        "/v1/models": {"get": api_operation(
            "Every configured model and its state on its model server.",
            {"200": {"description": "Models.", "content": _json(_ref("ModelList"))}}, {}, operationId="listModels")},
        "/v1/models/{model}": {"get": api_operation(
            "One configured model's state on its model server.",
            {"200": {"description": "Model status.", "content": _json(_ref("ModelStatus"))}},
            {"404": PREDICT_ERRORS["404"]}, operationId="modelStatus", parameters=[model_param])},
        "/healthz": {"get": {"summary": "Liveness: the process answers (never calls the model server).",
                             "tags": ["operations"], "operationId": "healthz",
                             "responses": {"200": {"description": "Alive.", "content": _json(_ref("Health"))}}}},
        "/readyz": {"get": {"summary": "Readiness: every configured model is AVAILABLE.", "tags": ["operations"],
                            "operationId": "readyz",
                            "responses": {"200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                                          "503": {"description": "Not ready.", "content": _json(_ref("Readiness"))}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format).", "tags": ["operations"],
                             "operationId": "metrics",
                             "responses": {"200": {"description": "Metrics.",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    components: dict[str, Any] = {"schemas": _schemas()}
    if auth:
        components["securitySchemes"] = {
            API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                             "description": "An API key issued by the gateway's operator."},
            BEARER_SCHEME: {"type": "http", "scheme": "bearer",
                            "description": "The same API key as `Authorization: Bearer <key>`."},
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Image classifier gateway", "version": version,
                 "description": "POST an image, get the top labels as JSON. Every response carries "
                                f"{REQUEST_ID_HEADER}; errors are {{\"error\", \"request_id\"}}."},
        "paths": paths,
        "components": components,
    }


def _package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Serve this gateway's OpenAPI document at ``/openapi.json`` (after security.init_app)."""
    with app.app_context():
        routes = sorted(get_registry().models)
    spec = build_spec(routes, auth_enabled(app), _package_version())

    def openapi_json() -> Response:
        return jsonify(spec)

    app.add_url_rule(OPENAPI_PATH, "openapi", openapi_json, methods=["GET"])
