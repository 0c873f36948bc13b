"""The Open Inference Protocol (KServe v2) REST API over the same repository as /v1 (no HTTP in here).

Thin, like ``RestApi``: parse the path (``v2_routing``), hold the version with
``repository.acquire`` (same version policy), decode (``v2_codec``), run through the same
``submit`` (same pool or batching queue and deadline), encode. Errors are ``{"error": ...}`` with
their HTTP status: 400 bad request, 404 unknown model or version, 503 not ready / queue full.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import metadata as package_metadata
from typing import Any

import orjson

from model_server import v2_codec, v2_routing
from model_server.errors import NotFound, ServingError, error_body
from model_server.repository import STATE_AVAILABLE, STATE_END, ModelRepository
from model_server.rest_server import MAX_BODY_BYTES, ApiResponse, SubmitFn, run_before_deadline
from serving_contract.export import SERVING_DEFAULT

SERVER_NAME = "model_server"
PACKAGE_NAME = "keras-and-tensorflow-serving"
# What a SavedModel is called in v2 metadata (Triton's name for the TensorFlow SavedModel backend).
PLATFORM = "tensorflow_savedmodel"
EXTENSIONS = ("binary_tensor_data", "classification")
# Our extension of model metadata, as on /v1: the exporter's export_info, when the version has one.
EXPORT_INFO_KEY = "export_info"
# Where an export carries its class labels, until the export contract (serving_contract) names it.
LABELS_KEY = "labels"
LIVE_KEY = "live"
READY_KEY = "ready"
API_NAMES = {v2_routing.MODEL_METADATA: "v2_metadata", v2_routing.MODEL_READY: "v2_ready",
             v2_routing.INFER: "v2_infer"}


def server_version() -> str:
    """This project's installed version, or "unknown" when run from a source tree without installing."""
    try:
        return package_metadata.version(PACKAGE_NAME)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def export_labels(export_info: Mapping[str, Any] | None) -> list[str] | None:
    """Class labels carried by an export (``export_info["labels"]``), for the classification extension.

    Accepts a list of strings, or of objects with a ``"label"`` string; None when the export has
    no usable labels (then classification answers ``"value:index"`` only).
    """
    raw = (export_info or {}).get(LABELS_KEY)
    if not isinstance(raw, list):
        return None
    labels = [item.get("label") if isinstance(item, dict) else item for item in raw]
    return labels if all(isinstance(label, str) for label in labels) else None


class V2Api:
    """The v2 REST API of a model repository."""

    def __init__(self, repository: ModelRepository, submit: SubmitFn, timeout_s: float):
        self._repository = repository
        self._submit = submit
        self._timeout_s = timeout_s

    def handle(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> ApiResponse:
        """Answer one /v2 request."""
        started = time.monotonic()
        response = ApiResponse(200, b"")
        try:
            request = v2_routing.parse_request(method, path)
            response.model_name = request.name
            response.api = API_NAMES.get(request.api, "")
            if request.api == v2_routing.SERVER_METADATA:
                response.body = orjson.dumps({"name": SERVER_NAME, "version": server_version(),
                                              "extensions": list(EXTENSIONS)})
            elif request.api == v2_routing.SERVER_LIVE:
                response.body = orjson.dumps({LIVE_KEY: True})
            elif request.api == v2_routing.SERVER_READY:
                ready = self._server_ready()
                response.http_status = 200 if ready else 503
                response.body = orjson.dumps({READY_KEY: ready})
            elif request.api == v2_routing.MODEL_READY:
                self._model_ready(request, response)
            elif request.api == v2_routing.MODEL_METADATA:
                response.body = self._model_metadata(request, response)
            else:
                self._infer(request, body, headers, started, response)
        except ServingError as exc:
            response.http_status, response.body, response.status_code = exc.http_status, error_body(exc), exc.code
            response.content_type, response.headers = v2_codec.JSON_CONTENT_TYPE, {}
        return response

    def _server_ready(self) -> bool:
        """Every model still being served (any version not END) has an AVAILABLE version."""
        models = self._repository.snapshot()
        served = [states for states in models.values() if any(s != STATE_END for s in states.values())]
        return bool(served) and all(STATE_AVAILABLE in states.values() for states in served)

    def _model_ready(self, request: v2_routing.V2Request, response: ApiResponse) -> None:
        states = self._repository.snapshot().get(request.name)
        if states is None:
            raise NotFound(f"Model '{request.name}' is not served by this server")
        if request.version is None:
            ready = STATE_AVAILABLE in states.values()
        elif request.version not in states:
            raise NotFound(f"Version {request.version} of model '{request.name}' is not served by this server")
        else:
            ready = states[request.version] == STATE_AVAILABLE
        response.http_status = 200 if ready else 503
        response.body = orjson.dumps({"name": request.name, READY_KEY: ready})

    def _model_metadata(self, request: v2_routing.V2Request, response: ApiResponse) -> bytes:
        states = self._repository.snapshot().get(request.name, {})
        with self._repository.acquire(request.name, request.version) as handle:
            response.version = str(handle.version)
            servable = handle.servable
            signature = servable.signatures.get(SERVING_DEFAULT)
            body: dict[str, Any] = {
                "name": request.name,
                "versions": [str(v) for v in sorted(states) if states[v] == STATE_AVAILABLE],
                "platform": PLATFORM,
                "inputs": v2_codec.metadata_tensors(signature.inputs) if signature else [],
                "outputs": v2_codec.metadata_tensors(signature.outputs) if signature else [],
            }
            if servable.export_info is not None:
                body[EXPORT_INFO_KEY] = servable.export_info
        return orjson.dumps(body)

    def _infer(self, request: v2_routing.V2Request, body: bytes, headers: Mapping[str, str], started: float,
               response: ApiResponse) -> None:
        body = v2_codec.decode_content(body, headers.get("Content-Encoding"), MAX_BODY_BYTES)
        parsed = v2_codec.parse_infer_request(body, headers.get(v2_codec.HEADER_LENGTH_HEADER))
        with self._repository.acquire(request.name, request.version) as handle:
            response.version = str(handle.version)
            signature = handle.servable.predict_signature(parsed.signature_name)
            v2_codec.check_inputs(parsed, signature.inputs, signature.name)
            v2_codec.check_outputs(parsed.outputs, signature.outputs, signature.name)
            outputs = run_before_deadline(self._submit, handle, signature.name, parsed.inputs, self._timeout_s,
                                          started)
            labels = export_labels(handle.servable.export_info)
        encoded = v2_codec.encode_infer_response(request.name, str(handle.version), parsed, outputs, labels)
        response.body, response.content_type = encoded.body, encoded.content_type
        if encoded.header_length is not None:
            response.headers = {v2_codec.HEADER_LENGTH_HEADER: str(encoded.header_length)}

