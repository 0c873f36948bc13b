"""TF Serving REST client, the gateway's REST transport (``transport.ModelServerTransport``): one
pooled session per model server, explicit timeouts, and every ``requests`` exception translated
into the gateway's error tree at one boundary (``_translate``).

Speaks the REST API that both ``tensorflow_model_server`` and ``python -m model_server`` serve::

    GET  /v1/models/NAME                          -> {"model_version_status": [{"version": "3", "state": ...}]}
    GET  /v1/models/NAME[/versions/V|/labels/L]/metadata -> {"model_spec": {"version": "3"}, "metadata": {...}}
    POST /v1/models/NAME/versions/V:predict       {"signature_name", "instances"} -> {"predictions"}

Error messages go to clients, so they name the model, never the model server's URL (an internal
address); the URL travels in the error's ``detail``, which only the log sees (errors.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import requests
from requests.adapters import HTTPAdapter

from flask_server.config import (DEFAULT_BACKEND_CONNECT_TIMEOUT, DEFAULT_BACKEND_POOL_SIZE, DEFAULT_BACKEND_TIMEOUT,
                                 GatewayConfig)
from flask_server.errors import (BadModelServerReply, ModelNotAvailable, ModelServerTimeout, ModelServerUnavailable,
                                 quote_reply)
from flask_server.model_config import ModelSpec
from flask_server.request_id import REQUEST_ID_HEADER
from flask_server.transport import EncodedBatch, TopK
from flask_server.wire_format import (ERROR_KEY, MODEL_VERSION_STATUS_KEY, decode_predictions, decode_top_k,
                                      encode_batch)

#: How every 503 for an unreachable or overloaded model server begins (followed by the model).
UNAVAILABLE_MESSAGE = "model server unavailable"
JSON_CONTENT_TYPE = "application/json"
_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


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
                                      f"{MODEL_VERSION_STATUS_KEY} list: {quote_reply(reply)}", self.base_url)
        return versions

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """The model's metadata reply (``model_spec``, ``metadata``) for a version, a label or the latest."""
        return self._request("GET", name, model_path(name, version, label) + "/metadata", request_id=request_id)

    def encode(self, spec: ModelSpec, batch: np.ndarray, k: int | None = None) -> EncodedBatch:
        """The predict body for ``batch`` (N, H, W, 3): uint8 pixels for the ``raw_uint8_b64`` input
        format, else float32 preprocessed pixels, and ``k`` for serving_topk
        (wire_format.encode_predict_request)."""
        return encode_batch(spec, batch, k)

    def predict(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                request_id: str | None = None) -> np.ndarray:
        """Scores (N, classes) float32 for an ``encode``d batch, from that exact version."""
        reply = self._predict_reply(spec, encoded, version, request_id)
        return decode_predictions(reply, encoded.size, f"model server, model {spec.model_name!r}", self.base_url)

    def predict_top_k(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                      request_id: str | None = None) -> TopK:
        """serving_topk's best classes for an ``encode``d batch, from that exact version."""
        reply = self._predict_reply(spec, encoded, version, request_id)
        return decode_top_k(reply, encoded.size, f"model server, model {spec.model_name!r}", self.base_url)

    def _predict_reply(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                       request_id: str | None) -> dict[str, Any]:
        return self._request("POST", spec.model_name, model_path(spec.model_name, version) + ":predict",
                             encoded.body, request_id)

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
                                      f"JSON object: {quote_reply(response.content)}", where)
        message = (reply.get(ERROR_KEY) if isinstance(reply, dict) else None) or quote_reply(response.content)
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


def model_path(name: str, version: int | None = None, label: str | None = None) -> str:
    """``/v1/models/NAME[/versions/V | /labels/L]`` (TF Serving's URL grammar)."""
    path = f"/v1/models/{name}"
    if version is not None:
        return f"{path}/versions/{version}"
    if label is not None:
        return f"{path}/labels/{label}"
    return path


def _reason(exc: BaseException) -> str:
    """'Connection refused' from requests' long wrapped messages, else the exception type."""
    match = _ERRNO_REASON.search(str(exc))
    return match.group(1).strip() if match else type(exc).__name__
