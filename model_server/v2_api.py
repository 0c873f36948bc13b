"""The Open Inference Protocol (KServe v2) over the same repository as /v1 (no HTTP in here).

``V2DataPlane`` is the protocol's logic, shared by every front: hold the version with
``repository.acquire`` (same version policy as /v1), check the inputs against the signature, run
through the same ``submit`` (same pool or batching queue) within a deadline. ``V2Api`` is the REST
front, thin like ``RestApi``: parse the path (``v2_routing``), decode and encode (``v2_codec``).
Errors are ``{"error": ...}`` with their HTTP status: 400 bad request, 404 unknown model or
version, 503 not ready / queue full, 504 deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as package_metadata
from typing import Any

import numpy as np
import orjson

from model_server import v2_codec, v2_routing
from model_server.errors import NotFound, ServingError, error_body
from model_server.repository import STATE_AVAILABLE, STATE_END, ModelRepository
from model_server.model_calls import SubmitFn, run_with_deadline
from model_server.rest_server import MAX_BODY_BYTES, ApiResponse
from serving_contract.export import EXPORT_INFO_METADATA_KEY, SERVING_DEFAULT
from serving_contract.labels import LabelsError, labels_from_info

log = logging.getLogger(__name__)

SERVER_NAME = "model_server"
PACKAGE_NAME = "keras-and-tensorflow-serving"
# What a SavedModel is called in v2 metadata (Triton's name for the TensorFlow SavedModel backend).
PLATFORM = "tensorflow_savedmodel"
EXTENSIONS = ("binary_tensor_data", "classification")
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
    """The class names an export carries (``serving_contract.labels``), for the classification
    extension; None when it has none, or unreadable ones (logged): then classification answers
    ``"value:index"`` only, as Triton does for a model without labels."""
    try:
        labels = labels_from_info(export_info)
    except LabelsError as exc:
        log.warning("Ignoring the export's labels for classification: %s", exc)
        return None
    return None if labels is None else [label for _, label in labels]


@dataclass(frozen=True)
class InferResult:
    """One inference: the version that ran it, its output tensors and the labels its export carries
    (read only for a request that asks for classification: None otherwise)."""

    version: int
    outputs: dict[str, np.ndarray]
    labels: list[str] | None


class V2DataPlane:
    """The v2 protocol's logic over a model repository, shared by the REST and gRPC fronts.

    Like KServe's ``DataPlane``: model lookup (``repository.acquire``, the same version policy as
    /v1), readiness, metadata and inference through ``submit`` (the same pool or batching queue);
    the fronts only decode requests and encode answers. Errors are ServingErrors.
    """

    def __init__(self, repository: ModelRepository, submit: SubmitFn):
        self._repository = repository
        self._submit = submit

    @staticmethod
    def server_metadata() -> dict[str, Any]:
        """``{"name", "version", "extensions"}``."""
        return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}

    def server_ready(self) -> bool:
        """Every model still being served (any version not END) has an AVAILABLE version."""
        models = self._repository.snapshot()
        served = [states for states in models.values() if any(s != STATE_END for s in states.values())]
        return bool(served) and all(STATE_AVAILABLE in states.values() for states in served)

    def model_ready(self, name: str, version: int | None) -> bool:
        """Whether the model (or that version) is AVAILABLE; NotFound when it is not served at all."""
        states = self._repository.snapshot().get(name)
        if states is None:
            raise NotFound(f"Model '{name}' is not served by this server")
        if version is None:
            return STATE_AVAILABLE in states.values()
        if version not in states:
            raise NotFound(f"Version {version} of model '{name}' is not served by this server")
        return states[version] == STATE_AVAILABLE

    def model_metadata(self, name: str, version: int | None) -> tuple[int, dict[str, Any]]:
        """(version, ``$metadata_model_response``) of the model's ``serving_default`` signature, plus
        our ``export_info``."""
        states = self._repository.snapshot().get(name, {})
        with self._repository.acquire(name, version) as handle:
            servable = handle.servable
            signature = servable.signatures.get(SERVING_DEFAULT)
            body: dict[str, Any] = {
                "name": name,
                "versions": [str(v) for v in sorted(states) if states[v] == STATE_AVAILABLE],
                "platform": PLATFORM,
                "inputs": v2_codec.metadata_tensors(signature.inputs) if signature else [],
                "outputs": v2_codec.metadata_tensors(signature.outputs) if signature else [],
            }
            if servable.export_info is not None:
                # Our extension of model metadata, as on /v1: the exporter's export_info.
                body[EXPORT_INFO_METADATA_KEY] = servable.export_info
        return handle.version, body

    def infer(self, name: str, version: int | None, request: v2_codec.InferRequest,
              timeout_s: float | None) -> InferResult:
        """Run ``request`` on the signature it names (default ``serving_default``), checked against it."""
        with self._repository.acquire(name, version) as handle:
            signature = handle.servable.predict_signature(request.signature_name)
            v2_codec.check_inputs(request, signature.inputs, signature.name)
            v2_codec.check_outputs(request.outputs, signature.outputs, signature.name)
            outputs = run_with_deadline(self._submit, handle, signature.name, request.inputs, timeout_s)
            # Reading 1000 labels costs ~0.1 ms: only for the classification extension that uses them.
            classifies = request.outputs is not None and any(wanted.classification for wanted in request.outputs)
            labels = export_labels(handle.servable.export_info) if classifies else None
            return InferResult(handle.version, outputs, labels)


class V2Api:
    """The v2 REST API (no HTTP in here): parse the path, call the data plane, render JSON."""

    def __init__(self, dataplane: V2DataPlane, timeout_s: float):
        self.dataplane = dataplane
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
                response.body = orjson.dumps(self.dataplane.server_metadata())
            elif request.api == v2_routing.SERVER_LIVE:
                response.body = orjson.dumps({LIVE_KEY: True})
            elif request.api == v2_routing.SERVER_READY:
                ready = self.dataplane.server_ready()
                response.http_status = 200 if ready else 503
                response.body = orjson.dumps({READY_KEY: ready})
            elif request.api == v2_routing.MODEL_READY:
                ready = self.dataplane.model_ready(request.name, request.version)
                response.http_status = 200 if ready else 503
                response.body = orjson.dumps({"name": request.name, READY_KEY: ready})
            elif request.api == v2_routing.MODEL_METADATA:
                version, metadata = self.dataplane.model_metadata(request.name, request.version)
                response.version, response.body = str(version), orjson.dumps(metadata)
            else:
                self._infer(request, body, headers, started, response)
        except ServingError as exc:
            response.http_status, response.body, response.status_code = exc.http_status, error_body(exc), exc.code
            response.content_type, response.headers = v2_codec.JSON_CONTENT_TYPE, {}
        return response

    def _infer(self, request: v2_routing.V2Request, body: bytes, headers: Mapping[str, str], started: float,
               response: ApiResponse) -> None:
        body = v2_codec.decode_content(body, headers.get("Content-Encoding"), MAX_BODY_BYTES)
        parsed = v2_codec.parse_infer_request(body, headers.get(v2_codec.HEADER_LENGTH_HEADER))
        result = self.dataplane.infer(request.name, request.version, parsed,
                                      self._timeout_s - (time.monotonic() - started))
        response.version = str(result.version)
        encoded = v2_codec.encode_infer_response(request.name, response.version, parsed, result.outputs,
                                                 result.labels)
        response.body, response.content_type = encoded.body, encoded.content_type
        if encoded.header_length is not None:
            response.headers = {v2_codec.HEADER_LENGTH_HEADER: str(encoded.header_length)}
