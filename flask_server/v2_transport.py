"""The gateway's Open Inference Protocol (KServe v2) transport (``transport.ModelServerTransport``):
any v2 server as a model's backend.

With ``protocol = "v2"`` in a model's MODELS_CONFIG table, the gateway talks to that model server
as to Triton, KServe or MLServer (our own ``python -m model_server`` speaks it too), with the same
routes, preprocessing, labels and errors as over TF Serving's REST API::

    GET  /v2/models/NAME                  -> {"versions": ["1", "2"], "inputs": [...], ...}
    GET  /v2/models/NAME/versions/V       -> the same for V (our server adds "export_info")
    POST /v2/models/NAME/versions/V/infer    JSON header + binary tensor data (Triton's extension)

Images go out with the binary tensor data extension, never as JSON numbers: for the exporter's
``pixels_bytes`` signatures (``raw_uint8_b64`` / ``raw_float32_b64``) a BYTES tensor ``[N]`` whose
elements are each image's HWC uint8 (or float32) pixels; for a float32 image input (``json``), an
FP32 tensor ``[N, H, W, 3]``. The scores come back as binary data too (``binary_data_output``).
A server that reports no versions is called without a version, as version 0.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import orjson

from flask_server.backend import ModelServerClient
from flask_server.errors import BadModelServerReply, quote_reply
from flask_server.model_config import JSON_FLOATS, RAW_FLOAT32_B64, RAW_UINT8_B64, ModelSpec
from flask_server.transport import EncodedBatch, TopK
from flask_server.version_tracker import AVAILABLE
from flask_server.wire_format import wire_pixels
from serving_contract.export import EXPORT_INFO_METADATA_KEY, OUTPUT_PROBABILITIES

PROTOCOL = "v2"
#: The version a server without versions is called (and reported) as.
UNVERSIONED = 0
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
SIGNATURE_NAME_PARAMETER = "signature_name"
_LENGTH_PREFIX = struct.Struct("<I")
# v2 datatypes the scores may come in, as little-endian numpy dtypes.
_SCORE_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "FP16": np.dtype("<f2")}


@dataclasses.dataclass(frozen=True)
class V2EncodedBatch(EncodedBatch):
    """An inference request body: ``header_length`` bytes of JSON, then the binary tensor data."""

    header_length: int = 0


def encode_infer_request(input_name: str, input_format: str, signature: str, batch: np.ndarray) -> V2EncodedBatch:
    """The v2 inference request for ``batch`` (N, H, W, 3): uint8 pixels for ``raw_uint8_b64``,
    scaled float32 otherwise (what ``model_input`` made), all as binary data after the JSON."""
    pixels = wire_pixels(input_format, batch)
    if input_format in (RAW_UINT8_B64, RAW_FLOAT32_B64):
        parts = []
        for image in pixels:
            parts += [_LENGTH_PREFIX.pack(image.nbytes), image.tobytes()]
        data, datatype, shape = b"".join(parts), "BYTES", [len(pixels)]
    elif input_format == JSON_FLOATS:
        data, datatype, shape = pixels.tobytes(), "FP32", list(pixels.shape)
    else:
        raise ValueError(f"unknown input format {input_format!r}")
    header = orjson.dumps({
        "inputs": [{"name": input_name, "shape": shape, "datatype": datatype,
                    "parameters": {"binary_data_size": len(data)}}],
        "parameters": {SIGNATURE_NAME_PARAMETER: signature, "binary_data_output": True},
    })
    return V2EncodedBatch(header + data, len(batch), len(header))


def decode_scores(content: bytes, header_length: str | None, batch_size: int, where: str,
                  detail: str | None = None) -> np.ndarray:
    """The scores (``probabilities``, or the only output) of an inference response as float32
    (batch_size, classes), from binary or JSON data; BadModelServerReply if they are not that."""
    try:
        length = len(content) if header_length is None else int(header_length)
        reply = orjson.loads(content[:length])
        outputs = reply["outputs"]
        offsets, offset = {}, length
        for output in outputs:
            size = (output.get("parameters") or {}).get("binary_data_size")
            offsets[output["name"]] = (offset, size)
            offset += size or 0
    except (ValueError, TypeError, KeyError, AttributeError):
        raise BadModelServerReply(f"{where}: the inference response is not a v2 response: {quote_reply(content)}",
                                  detail) from None
    named = [o for o in outputs if o.get("name") == OUTPUT_PROBABILITIES]
    if not named and len(outputs) != 1:
        raise BadModelServerReply(f"{where}: expected an output {OUTPUT_PROBABILITIES!r} or a single output, got "
                                  f"{[o.get('name') for o in outputs]}", detail)
    output = (named or outputs)[0]
    dtype = _SCORE_DTYPES.get(output.get("datatype"))
    start, size = offsets[output["name"]]
    try:
        if dtype is None:
            raise ValueError(f"datatype {output.get('datatype')!r}")
        if size is None:
            values = np.asarray(output["data"], dtype=np.float32)
        else:
            values = np.frombuffer(content, dtype=dtype, count=size // dtype.itemsize, offset=start)
        scores = values.astype(np.float32).reshape(output["shape"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BadModelServerReply(f"{where}: unreadable scores in output {output['name']!r} ({exc})", detail) from None
    if scores.ndim != 2 or scores.shape[0] != batch_size:
        raise BadModelServerReply(f"{where}: expected scores of shape [{batch_size}, classes], got "
                                  f"{list(scores.shape)}", detail)
    return scores


def _model_path(name: str, version: int | None = None) -> str:
    path = f"/v2/models/{name}"
    return path if version in (None, UNVERSIONED) else f"{path}/versions/{version}"


def _versions(reply: dict[str, Any], name: str, detail: str) -> list[int]:
    """The versions a v2 metadata reply lists, as ints ([UNVERSIONED] when it lists none)."""
    versions = reply.get("versions") or []
    try:
        numbers = sorted(int(v) for v in versions)
    except (TypeError, ValueError):
        raise BadModelServerReply(f"model server: model {name!r} has non-integer versions: {quote_reply(versions)}",
                                  detail) from None
    return numbers or [UNVERSIONED]


class V2Client(ModelServerClient):
    """Client of one Open Inference Protocol server; the same session, timeouts and error
    translation as the REST client (``ModelServerClient._send``), over the v2 routes."""

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        """Every version the model's v2 metadata lists, as AVAILABLE (v2 servers list what can be called)."""
        reply = self._request("GET", name, _model_path(name), request_id=request_id)
        return [{"version": str(v), "state": AVAILABLE} for v in _versions(reply, name, self.base_url)]

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """``{"model_spec": {"name", "version"}, "metadata": {...}}`` from the v2 metadata; ``export_info``
        where the server has our extension. Version labels are TF Serving's: v2 has none."""
        if label is not None:
            raise BadModelServerReply(f"model {name!r}: version labels ({label!r}) do not exist in the v2 "
                                      f"protocol; pin a version instead", self.base_url)
        reply = self._request("GET", name, _model_path(name, version), request_id=request_id)
        if version is None:
            version = _versions(reply, name, self.base_url)[-1]
        info = reply.get(EXPORT_INFO_METADATA_KEY)
        metadata = {EXPORT_INFO_METADATA_KEY: info} if isinstance(info, dict) else {}
        return {"model_spec": {"name": name, "version": str(version)}, "metadata": metadata}

    def encode(self, spec: ModelSpec, batch: np.ndarray, k: int | None = None) -> V2EncodedBatch:
        """The v2 inference request for ``batch`` under ``spec``'s input name, format and signature.

        ``k`` is for ``serving_topk``, which the gateway never picks over v2: v2 metadata describes
        one signature's tensors, not a SignatureDef list, so ``model_metadata`` lists none.
        """
        return encode_infer_request(spec.input_name, spec.input_format, spec.signature, batch)

    def predict_top_k(self, spec: ModelSpec, encoded: V2EncodedBatch, version: int,
                      request_id: str | None = None) -> TopK:
        """Not over v2 (see ``encode``): BadModelServerReply naming the setting to change."""
        raise BadModelServerReply(f"model {spec.model_name!r}: signature {spec.signature!r} is not called over the "
                                  f"v2 protocol; set models.{spec.route}.signature to a probabilities signature "
                                  f"(serving_uint8)", self.base_url)

    def predict(self, spec: ModelSpec, encoded: V2EncodedBatch, version: int,
                request_id: str | None = None) -> np.ndarray:
        """Scores (N, classes) float32 for an ``encode``d batch, from that exact version."""
        path = _model_path(spec.model_name, version) + "/infer"
        response = self._send("POST", spec.model_name, path, encoded.body, request_id, BINARY_CONTENT_TYPE,
                              {HEADER_LENGTH_HEADER: str(encoded.header_length)})
        return decode_scores(response.content, response.headers.get(HEADER_LENGTH_HEADER), encoded.size,
                             f"model server, model {spec.model_name!r}", self.base_url + path)
