"""The gateway's gRPC transport: TF Serving's PredictionService / ModelService, without TensorFlow.

With ``protocol = "grpc"`` in a model's MODELS_CONFIG table, the gateway talks to that model server
over gRPC (``model_server_url = "grpc://host:8500"``) instead of REST. Requests and replies are
the hand-written messages of ``grpc_messages.py`` sent through grpcio's generic unary calls, so
the gateway imports ``grpc`` (about 10 MB) and never TensorFlow. Pixels travel as raw bytes in a
DT_STRING tensor (``serving_uint8`` / ``serving_bytes``) or as a float32 ``tensor_content``
(``serving_default``): no base64, no JSON.

``GrpcTransport`` implements ``transport.ModelServerTransport`` (``model_status``, ``model_metadata``,
``encode``, ``predict``, ``close``) and raises the same ``BackendError`` subclasses, translated from the gRPC
status at one boundary (``_translate``): NOT_FOUND -> ModelNotAvailable, UNAVAILABLE ->
ModelServerUnavailable, DEADLINE_EXCEEDED -> ModelServerTimeout, anything else ->
BadModelServerReply. The request id goes out as ``x-request-id`` metadata.

Our model server's ``export_info`` (the untrained-weights warning, the config checks) comes from
its GetModelMetadata extension field; ``tensorflow_model_server`` has none, as over REST.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from flask_server import grpc_messages as messages
from flask_server.backend import UNAVAILABLE_MESSAGE
from flask_server.config import GRPC_URL_SCHEME, GatewayConfig
from flask_server.errors import BadModelServerReply, ModelNotAvailable, ModelServerTimeout, ModelServerUnavailable
from flask_server.model_config import RAW_FLOAT32_B64, RAW_UINT8_B64, ModelSpec
from flask_server.transport import EncodedBatch, TopK
from flask_server.wire_format import wire_pixels
from serving_contract.export import (EXPORT_INFO_METADATA_KEY, INPUT_K, OUTPUT_CLASS_ID, OUTPUT_CLASS_INDEX,
                                     OUTPUT_CLASS_LABEL, OUTPUT_PROBABILITIES, OUTPUT_SCORES, SERVING_TOPK)

REQUEST_ID_METADATA = "x-request-id"
# Replies carry (N, classes) scores: far below gRPC's 4 MiB default, but a big batch of a big
# label set should not fail on the client's limit.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def grpc_target(model_server_url: str) -> str:
    """``grpc://host:port`` -> ``host:port`` (a bare ``host:port`` is taken as it is)."""
    return model_server_url.removeprefix(GRPC_URL_SCHEME)


class GrpcTransport:
    """TF Serving's gRPC API on one channel (HTTP/2 multiplexes every thread's calls on it).

    ``timeout`` is ``(connect, read)`` like the REST client's: a call fails at once with
    UNAVAILABLE when no connection can be made, and the read timeout is each call's deadline.
    """

    def __init__(self, model_server_url: str, timeout: tuple[float, float], channel: grpc.Channel | None = None):
        self.base_url = model_server_url
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(grpc_target(model_server_url), options=_CHANNEL_OPTIONS)
        self._metadata_fields = (EXPORT_INFO_METADATA_KEY,)
        self._predict = self._channel.unary_unary(messages.PREDICT_METHOD)
        self._metadata = self._channel.unary_unary(messages.METADATA_METHOD)
        self._status = self._channel.unary_unary(messages.STATUS_METHOD)

    @classmethod
    def from_config(cls, model_server_url: str, config: GatewayConfig) -> GrpcTransport:
        """A transport with the gateway's timeouts (``GatewayConfig``)."""
        return cls(model_server_url, (config.backend_connect_timeout, config.backend_timeout))

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        """The model's ``model_version_status`` entries, spelled as TF Serving's REST API spells them."""
        reply = self._call(self._status, messages.status_request(messages.model_spec(name)), name, request_id)
        return self._read(messages.read_status_response, reply, name)

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """``{"model_spec": {"name", "version"}, "metadata": {"export_info": {...}}}`` for a version, a
        label or the latest, like the REST metadata but without the signature defs: over gRPC the
        gateway learns a version's input size and labels from export_info alone, and calls
        ``serving_uint8`` unless the route states another signature.

        Asks for our model server's ``export_info`` field; ``tensorflow_model_server`` refuses it
        (INVALID_ARGUMENT), after which this transport asks for ``signature_def`` only.
        """
        spec = messages.model_spec(name, version, label)
        try:
            reply = self._call(self._metadata, messages.metadata_request(spec, self._metadata_fields), name,
                               request_id)
        except BadModelServerReply as exc:
            if self._metadata_fields == messages.METADATA_FIELDS_SIGNATURE_DEF or not _refused_field(exc):
                raise
            self._metadata_fields = messages.METADATA_FIELDS_SIGNATURE_DEF
            reply = self._call(self._metadata, messages.metadata_request(spec, self._metadata_fields), name,
                               request_id)
        info, texts = self._read(messages.read_metadata_response, reply, name)
        metadata: dict[str, Any] = {}
        if EXPORT_INFO_METADATA_KEY in texts:
            try:
                metadata[EXPORT_INFO_METADATA_KEY] = json.loads(texts[EXPORT_INFO_METADATA_KEY])
            except ValueError:
                pass  # only a warning and a config check depend on it; the REST client ignores it too
        return {"model_spec": {"name": info.name, "version": str(info.version)}, "metadata": metadata}

    def encode(self, spec: ModelSpec, batch: np.ndarray, k: int | None = None) -> EncodedBatch:
        """The PredictRequest for ``batch`` (N, H, W, 3): one bytes string per image for the ``*_bytes``
        signatures (uint8 or float32 pixels), else the float32 tensor itself; for ``serving_topk``
        also ``k`` as an int32 [N] tensor."""
        pixels = wire_pixels(spec.input_format, batch)
        value: np.ndarray | list[bytes] = ([image.tobytes() for image in pixels]
                                           if spec.input_format in (RAW_UINT8_B64, RAW_FLOAT32_B64) else pixels)
        inputs: dict[str, np.ndarray | list[bytes]] = {spec.input_name: value}
        if spec.signature == SERVING_TOPK:
            if k is None:
                raise ValueError(f"{SERVING_TOPK} needs k")
            inputs[INPUT_K] = np.full(batch.shape[0], k, np.int32)
        # predict() prepends the model spec with the version it calls.
        return EncodedBatch(messages.predict_inputs(inputs), batch.shape[0])

    def predict(self, spec: ModelSpec, encoded: EncodedBatch, version: int | None,
                request_id: str | None = None) -> np.ndarray:
        """Scores (N, classes) float32 from that exact version of ``spec.model_name`` (None: the latest)."""
        outputs = self._predict_outputs(spec, encoded, version, request_id)
        scores = outputs.get(OUTPUT_PROBABILITIES)
        if scores is None and len(outputs) == 1:
            (scores,) = outputs.values()
        if scores is None or scores.ndim != 2 or scores.shape[0] != encoded.size:
            shapes = {alias: list(value.shape) for alias, value in outputs.items()}
            raise BadModelServerReply(f"model server, model {spec.model_name!r}: expected {OUTPUT_PROBABILITIES!r} "
                                      f"with {encoded.size} row(s), got outputs {shapes}", self.base_url)
        return scores.astype(np.float32, copy=False)

    def predict_top_k(self, spec: ModelSpec, encoded: EncodedBatch, version: int | None,
                      request_id: str | None = None) -> TopK:
        """serving_topk's best classes for an ``encode``d batch, from that exact version."""
        outputs = self._predict_outputs(spec, encoded, version, request_id)
        try:
            scores = np.asarray(outputs[OUTPUT_SCORES], np.float32)
            indices = np.asarray(outputs[OUTPUT_CLASS_INDEX]).astype(np.int64)
            ids, labels = (np.asarray(outputs[name]) for name in (OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL))
            if not (scores.ndim == 2 and scores.shape[0] == encoded.size
                    and scores.shape == indices.shape == ids.shape == labels.shape):
                raise ValueError("outputs of different shapes")
            names = [[[bytes(v).decode() for v in row] for row in array] for array in (ids, labels)]
        except (KeyError, TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            shapes = {alias: list(value.shape) for alias, value in outputs.items()}
            raise BadModelServerReply(f"model server, model {spec.model_name!r}: expected {SERVING_TOPK}'s "
                                      f"outputs for {encoded.size} image(s) ({exc}), got {shapes}",
                                      self.base_url) from exc
        return TopK(scores, indices, names[0], names[1])

    def _predict_outputs(self, spec: ModelSpec, encoded: EncodedBatch, version: int | None,
                         request_id: str | None) -> dict[str, np.ndarray]:
        request = messages.with_model_spec(messages.model_spec(spec.model_name, version, signature=spec.signature),
                                           encoded.body)
        reply = self._call(self._predict, request, spec.model_name, request_id)
        outputs, _ = self._read(messages.read_predict_response, reply, spec.model_name)
        return outputs

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: grpc.UnaryUnaryMultiCallable, request: bytes, model: str,
              request_id: str | None) -> bytes:
        metadata = ((REQUEST_ID_METADATA, request_id),) if request_id else None
        with self._translate(model):
            return method(request, timeout=self.timeout[1], metadata=metadata)

    def _read(self, reader, reply: bytes, model: str):
        try:
            return reader(reply)
        except messages.MessageError as exc:
            raise BadModelServerReply(f"model server sent a broken gRPC reply for model {model!r}: {exc}",
                                      self.base_url) from exc

    @contextlib.contextmanager
    def _translate(self, model: str) -> Iterator[None]:
        """Map gRPC status codes to the gateway's error tree, chained; other exceptions propagate."""
        try:
            yield
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            where = f"gRPC {self.base_url}"  # the error's detail: logged, never sent to the client
            if code == grpc.StatusCode.NOT_FOUND:
                raise ModelNotAvailable(f"model {model!r} is not available on the model server: {details}",
                                        where) from exc
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ModelServerUnavailable(f"{UNAVAILABLE_MESSAGE} for model {model!r}: {_reason(details)}",
                                             where) from exc
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ModelServerTimeout(f"model server did not answer within {self.timeout[1]:g} s for model "
                                         f"{model!r}", where) from exc
            raise BadModelServerReply(f"model server rejected the gateway's request for model {model!r} "
                                      f"({code.name}): {details}", where) from exc


def _refused_field(exc: BadModelServerReply) -> bool:
    """Whether a metadata error is TF Serving's "Metadata field ... is not supported"."""
    return "INVALID_ARGUMENT" in exc.message and "is not supported" in exc.message


def _reason(details: str) -> str:
    """gRPC's connection failures name the address ("ipv4:10.0.0.5:8500: ..."); keep only the reason."""
    if "failed to connect" in details.lower() or "connection refused" in details.lower():
        return "connection refused"
    return details
