"""TF Serving REST client: one pooled session per model server, explicit timeouts, and every
``requests`` exception translated into the gateway's error tree at one boundary (``_translate``).

Speaks the REST API that both ``tensorflow_model_server`` and ``python -m model_server`` serve::

    GET  /v1/models/NAME                          -> {"model_version_status": [{"version": "3", "state": ...}]}
    GET  /v1/models/NAME[/versions/V|/labels/L]/metadata -> {"model_spec": {"version": "3"}, "metadata": {...}}
    POST /v1/models/NAME/versions/V:predict       {"signature_name", "instances"} -> {"predictions"}

Which version answered: TF Serving's predict reply does not say, so the gateway picks the version
itself (``VersionTracker``) and always calls ``/versions/V:predict``; the reported version is
therefore the one that computed the scores. Latest: the highest AVAILABLE version in the model's
status. ``version_label``: the version the model server's metadata reports for
``/labels/L/metadata`` (``model_spec.version``). Both are cached for ``STATUS_TTL`` seconds, so a
newly loaded version is used and reported about a second after it becomes AVAILABLE. If the
model server answers 404 for the chosen version (unloaded by a hot swap), the status is refreshed
and the call retried once on the new version.

Error messages go to clients, so they name the model, never the model server's URL (an internal
address); the URL travels in the error's ``detail``, which only the log sees (errors.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson
import pybase64
import requests
from requests.adapters import HTTPAdapter

from flask_server.config import (DEFAULT_BACKEND_CONNECT_TIMEOUT, DEFAULT_BACKEND_POOL_SIZE, DEFAULT_BACKEND_TIMEOUT,
                                 GatewayConfig)
from flask_server.errors import (BadModelServerReply, ModelNotAvailable, ModelServerTimeout,
                                 ModelServerUnavailable, quote)
from flask_server.request_id import REQUEST_ID_HEADER
from serving_contract.export import OUTPUT_PROBABILITIES

if TYPE_CHECKING:  # models.py imports this module; the spec is only needed for type hints here
    from flask_server.models import ModelSpec

STATUS_TTL = 1.0
AVAILABLE = "AVAILABLE"
#: How every 503 for an unreachable or overloaded model server begins (followed by the model).
UNAVAILABLE_MESSAGE = "model server unavailable"
# TF Serving JSON keys (tensorflow_serving/util/json_tensor.cc)
SIGNATURE_NAME_KEY = "signature_name"
INSTANCES_KEY = "instances"
PREDICTIONS_KEY = "predictions"
B64_KEY = "b64"
ERROR_KEY = "error"
MODEL_VERSION_STATUS_KEY = "model_version_status"
JSON_CONTENT_TYPE = "application/json"
# How pixels travel to the model server (ModelSpec.input_format): raw uint8 pixels in {"b64": ...},
# scaled by the model's graph (the fast path: serving_uint8); raw float32 pixels the gateway scaled,
# in {"b64": ...} (serving_bytes); or float JSON (serving_default).
RAW_UINT8_B64 = "raw_uint8_b64"
RAW_FLOAT32_B64 = "raw_float32_b64"
JSON_FLOATS = "json"
INPUT_FORMATS = (RAW_UINT8_B64, RAW_FLOAT32_B64, JSON_FLOATS)
# Longest piece of a model server reply quoted in an error message.
_QUOTE_LIMIT = 200
_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")

T = TypeVar("T")


class ModelServerClient:
    """Client of one model server's REST API.

    ``timeout`` is ``(connect, read)`` seconds; ``session`` may be injected (tests, custom TLS).
    """

    def __init__(self, base_url: str,
                 timeout: tuple[float, float] = (DEFAULT_BACKEND_CONNECT_TIMEOUT, DEFAULT_BACKEND_TIMEOUT),
                 pool_size: int = DEFAULT_BACKEND_POOL_SIZE, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # No retries: a retried predict doubles the wait, and errors must surface as 502/503/504.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session

    @classmethod
    def from_config(cls, base_url: str, config: GatewayConfig) -> ModelServerClient:
        """A client with the gateway's timeouts and pool size."""
        return cls(base_url, (config.backend_connect_timeout, config.backend_timeout), config.backend_pool_size)

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        """The model's ``model_version_status`` list; ModelNotAvailable if the server does not know it."""
        reply = self._request("GET", name, model_path(name), request_id=request_id)
        versions = reply.get(MODEL_VERSION_STATUS_KEY)
        if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
            raise BadModelServerReply(f"model server: status of model {name!r} has no "
                                      f"{MODEL_VERSION_STATUS_KEY} list: {_quote(reply)}", self.base_url)
        return versions

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """The model's metadata reply (``model_spec``, ``metadata``) for a version, a label or the latest."""
        return self._request("GET", name, model_path(name, version, label) + "/metadata", request_id=request_id)

    def predict(self, spec: ModelSpec, batch: np.ndarray, version: int, request_id: str | None = None) -> np.ndarray:
        """Scores (N, classes) float32 for ``batch`` (N, H, W, 3) from that exact version: uint8 pixels
        for the ``raw_uint8_b64`` input format, else float32 preprocessed pixels."""
        return self.predict_encoded(spec, encode_batch(spec, batch), version, request_id)

    def predict_encoded(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                        request_id: str | None = None) -> np.ndarray:
        """``predict`` for a body already built by ``encode_batch``."""
        reply = self._request("POST", spec.model_name, model_path(spec.model_name, version) + ":predict",
                              encoded.body, request_id)
        return decode_predictions(reply, encoded.size, f"model server, model {spec.model_name!r}", self.base_url)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def _request(self, method: str, model: str, path: str, body: bytes | None = None,
                 request_id: str | None = None) -> dict[str, Any]:
        """One call about ``model``; returns the decoded JSON object or raises a BackendError subclass."""
        url = self.base_url + path
        where = f"{method} {url}"  # the error's detail: logged, never sent to the client
        headers = {"Accept": JSON_CONTENT_TYPE}
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        with self._translate(model, where):
            response = self.session.request(method, url, data=body, headers=headers, timeout=self.timeout)
        try:
            reply = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            reply = None
        status = response.status_code
        if status == 200:
            if isinstance(reply, dict):
                return reply
            raise BadModelServerReply(f"model server answered for model {model!r} with a body that is not a "
                                      f"JSON object: {_quote(response.content)}", where)
        message = (reply.get(ERROR_KEY) if isinstance(reply, dict) else None) or _quote(response.content)
        if status == 404:
            raise ModelNotAvailable(f"model {model!r} is not available on the model server: {message}", where)
        if status == 503:
            raise ModelServerUnavailable(f"{UNAVAILABLE_MESSAGE} for model {model!r}: {message}", where)
        if status == 504:
            raise ModelServerTimeout(f"model server timed out for model {model!r}: {message}", where)
        if 400 <= status < 500:
            # We built the request, so a 4xx means the gateway's model config does not fit the model.
            raise BadModelServerReply(f"model server rejected the gateway's request for model {model!r} "
                                      f"({status}): {message}", where)
        raise BadModelServerReply(f"model server failed for model {model!r} ({status}): {message}", where)

    @contextlib.contextmanager
    def _translate(self, model: str, where: str) -> Iterator[None]:
        """Map ``requests`` exceptions to the gateway's tree, chained; unknown ones propagate."""
        connect, read = self.timeout
        try:
            yield
        except requests.ConnectTimeout as exc:  # before ConnectionError: it is both
            raise ModelServerUnavailable(f"{UNAVAILABLE_MESSAGE} for model {model!r}: no connection "
                                         f"within {connect:g} s", where) from exc
        except requests.ReadTimeout as exc:
            raise ModelServerTimeout(f"model server did not answer within {read:g} s for model {model!r}",
                                     where) from exc
        except requests.ConnectionError as exc:
            raise ModelServerUnavailable(f"{UNAVAILABLE_MESSAGE} for model {model!r}: {_reason(exc)}",
                                         where) from exc
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise BadModelServerReply(f"model server sent a broken reply for model {model!r}: {_reason(exc)}",
                                      where) from exc


@dataclasses.dataclass(frozen=True)
class _CachedVersion:
    """A resolved version, until when it may be reused, and the ticket of the resolve that found it."""

    expires_at: float
    version: int
    ticket: int


class VersionTracker:
    """Which version of one model to call (and report), cached for ``ttl`` seconds; see module doc."""

    def __init__(self, client: ModelServerClient, model_name: str, version: int | None = None,
                 label: str | None = None, ttl: float = STATUS_TTL, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.model_name = model_name
        self.pinned_version = version
        self.label = label
        self.ttl = ttl
        self.clock = clock
        # Resolving calls the model server, so it runs outside the lock; two threads may resolve at
        # once. Each takes a ticket first, and an answer is stored only if no later-started resolve
        # stored one already: otherwise a slow thread that saw v1 could overwrite a fast one's v2
        # during a hot swap, and clients would see the version go backwards for another TTL.
        self._lock = threading.Lock()
        self._tickets = 0
        self._cached: _CachedVersion | None = None
        self._export_info: dict[int, dict[str, Any]] = {}

    def current(self, refresh: bool = False) -> int:
        """The version to call now; raises ModelNotAvailable if there is none."""
        with self._lock:
            cached = self._cached
            if not refresh and cached is not None and cached.expires_at > self.clock():
                return cached.version
            self._tickets += 1
            ticket = self._tickets
        version = self._resolve()
        with self._lock:
            cached = self._cached
            if cached is not None and cached.ticket > ticket:
                # A resolve that started after ours has answered: it saw a newer model server state.
                return cached.version
            self._cached = _CachedVersion(self.clock() + self.ttl, version, ticket)
        return version

    def predict(self, call: Callable[[int], T]) -> tuple[T, int]:
        """``call(version)`` on the current version; on 404 (version unloaded) refresh and retry once."""
        version = self.current()
        try:
            return call(version), version
        except ModelNotAvailable:
            fresh = self.current(refresh=True)
            if fresh == version:
                raise
            return call(fresh), fresh

    def export_info(self, version: int) -> dict[str, Any]:
        """The version's ``export_info`` from the metadata (fetched once per version), or {}."""
        info = self._export_info.get(version)
        if info is None:
            reply = self.client.model_metadata(self.model_name, version)
            info = self._export_info[version] = _export_info(reply)
        return info

    def _resolve(self) -> int:
        if self.label is not None:
            reply = self.client.model_metadata(self.model_name, label=self.label)
            version = _spec_version(reply)
            if version is None:
                raise BadModelServerReply(f"metadata of {self.model_name!r} label {self.label!r} has no "
                                          f"model_spec.version: {_quote(reply)}")
            self._export_info.setdefault(version, _export_info(reply))
            return version
        statuses = self.client.model_status(self.model_name)
        available = sorted(_version_number(s) for s in statuses if s.get("state") == AVAILABLE)
        if self.pinned_version is not None:
            if self.pinned_version in available:
                return self.pinned_version
            raise ModelNotAvailable(f"version {self.pinned_version} of model {self.model_name!r} is not "
                                    f"AVAILABLE on the model server ({_describe_states(statuses)})",
                                    self.client.base_url)
        if not available:
            raise ModelNotAvailable(f"model {self.model_name!r} has no AVAILABLE version on the model "
                                    f"server ({_describe_states(statuses)})", self.client.base_url)
        return available[-1]


def model_path(name: str, version: int | None = None, label: str | None = None) -> str:
    """``/v1/models/NAME[/versions/V | /labels/L]`` (TF Serving's URL grammar)."""
    path = f"/v1/models/{name}"
    if version is not None:
        return f"{path}/versions/{version}"
    if label is not None:
        return f"{path}/labels/{label}"
    return path


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """A predict request body for ``size`` images, built once by ``encode_predict_request``.

    The body does not depend on the version it is sent to, so a retry on a newer version re-sends
    it, and the pixels it was built from can be freed while the model server computes.
    """

    body: bytes
    size: int


def encode_batch(spec: ModelSpec, batch: np.ndarray) -> EncodedBatch:
    """``encode_predict_request`` with the number of images it holds."""
    return EncodedBatch(encode_predict_request(spec, batch), batch.shape[0])


def encode_predict_request(spec: ModelSpec, batch: np.ndarray) -> bytes:
    """The predict body for ``spec``'s signature: raw uint8 or float32 bytes as b64, or float JSON.

    ``batch`` is uint8 (N, H, W, 3) for ``raw_uint8_b64``, preprocessed float32 otherwise.
    """
    if spec.input_format == RAW_UINT8_B64:
        if batch.dtype != np.uint8:  # a cast would silently wrap or truncate scaled pixels
            raise ValueError(f"{RAW_UINT8_B64} takes uint8 pixels, got {batch.dtype}")
        return _raw_b64_body(spec, batch)
    if spec.input_format == RAW_FLOAT32_B64:
        return _raw_b64_body(spec, np.ascontiguousarray(batch, dtype="<f4"))
    instances = [{spec.input_name: image} for image in np.asarray(batch, dtype=np.float32)]
    return orjson.dumps({SIGNATURE_NAME_KEY: spec.signature, INSTANCES_KEY: instances},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def _raw_b64_body(spec: ModelSpec, batch: np.ndarray) -> bytes:
    """``{"signature_name": S, "instances": [{INPUT: {"b64": "..."}}, ...]}`` as bytes, built by joining.

    Each image's HWC bytes in ``batch``'s dtype; base64 is 4/3 of that (357 KB for 299x299 uint8,
    1.4 MB for float32; float JSON is 5.8 MB). The base64 output is ASCII with no character JSON
    would escape, so it is spliced in as bytes: going through orjson would decode it to a str and
    re-encode and scan it (~0.25 ms for float32). The names are still encoded by orjson, so the
    body is valid JSON whatever they contain.
    """
    batch = np.ascontiguousarray(batch)
    instance_head = b"{" + orjson.dumps(spec.input_name) + b':{"' + B64_KEY.encode() + b'":"'
    parts = [b'{"', SIGNATURE_NAME_KEY.encode(), b'":', orjson.dumps(spec.signature), b',"', INSTANCES_KEY.encode(),
             b'":[']
    for i, image in enumerate(batch):
        # pybase64 (SIMD) reads each image's buffer in place, no tobytes() copy: 0.06 ms for 299x299
        # float32 against binascii's 2.3 ms, with the same output.
        parts += [b"," if i else b"", instance_head, pybase64.b64encode(image), b'"}}']
    parts.append(b"]}")
    # One join: the only copy of the base64 text (a worker holds one per request in flight).
    return b"".join(parts)


def decode_predictions(reply: dict[str, Any], batch_size: int, where: str, detail: str | None = None) -> np.ndarray:
    """``reply["predictions"]`` as float32 (batch_size, classes); BadModelServerReply if it is not that.

    ``where`` starts the client's message, ``detail`` is for the log only (errors.GatewayError).
    """
    predictions = reply.get(PREDICTIONS_KEY)
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        # Signatures with several outputs answer one object per instance.
        predictions = [p.get(OUTPUT_PROBABILITIES) if isinstance(p, dict) else p for p in predictions]
    try:
        scores = np.asarray(predictions, dtype=np.float32)
    except (TypeError, ValueError):
        scores = None
    if scores is None or scores.ndim != 2 or scores.shape[0] != batch_size:
        raise BadModelServerReply(f"{where}: expected {PREDICTIONS_KEY!r} with {batch_size} row(s) of "
                                  f"{OUTPUT_PROBABILITIES}, got {_quote(reply)}", detail)
    return scores


def _export_info(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata.export_info`` (our model server's extension); {} from tensorflow_model_server."""
    info = (metadata.get("metadata") or {}).get("export_info") if isinstance(metadata, dict) else None
    return info if isinstance(info, dict) else {}


def _spec_version(metadata: dict[str, Any]) -> int | None:
    try:
        return int(metadata["model_spec"]["version"])
    except (KeyError, TypeError, ValueError):
        return None


def _version_number(status: dict[str, Any]) -> int:
    try:
        return int(status.get("version"))
    except (TypeError, ValueError) as exc:
        raise BadModelServerReply(f"model status has a non-integer version: {_quote(status)}") from exc


def _describe_states(statuses: list[dict[str, Any]]) -> str:
    states = ", ".join(f"version {s.get('version')} {s.get('state')}" for s in statuses)
    return f"states: {states}" if states else "no versions"


def _reason(exc: BaseException) -> str:
    """'Connection refused' from requests' long wrapped messages, else the exception type."""
    match = _ERRNO_REASON.search(str(exc))
    return match.group(1).strip() if match else type(exc).__name__


def _quote(value: Any) -> str:
    return quote(value, _QUOTE_LIMIT)
