"""One request function per benchmarked path, each checking its response.

* ``model_server_send``: client decode + resize, then ``serving_uint8`` with ``{"b64": raw uint8}``
  (orjson), the fastest documented way to call the model server directly.
* ``gateway_send``: base64 of the encoded image file in ``{"b64": ...}``; the gateway does the rest.
* ``tutorial_send``: the tutorial's way: nearest resize, / 255, ``tolist()`` and standard-library
  ``json`` into the row format of ``serving_default``, parsed back with ``json`` too.
* ``v2_send``: the same client-side decode + resize, then the model server's Open Inference Protocol
  (KServe v2) API: uint8 pixels as binary tensor data into ``serving_uint8`` (what the gateway's v2
  transport sends), or scaled float32 pixels as JSON numbers into ``serving_default``.

Every function raises ``BadResponse`` unless the status is 200 and the body is a sane prediction.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence

import orjson
import requests

from bench.images import preprocess, preprocess_tutorial
from bench.load import Send
from flask_server.preprocess import scale
from flask_server.v2_transport import HEADER_LENGTH_HEADER, decode_scores, encode_infer_request
from serving_contract.export import (INPUT_IMAGE, INPUT_PIXELS_BYTES, OUTPUT_PROBABILITIES, SERVING_DEFAULT,
                                     SERVING_UINT8)

# (connect, read). urllib3 applies the *connect* timeout while sending the body too, and a busy model
# server leaves queued connections unread: a 5.8 MB tutorial body then stalls for seconds. Both are
# generous so the table measures the servers' queueing, not the client's patience.
TIMEOUT = (30.0, 120.0)
JSON_HEADERS = {"Content-Type": "application/json"}
TOP_K = 5


class BadResponse(RuntimeError):
    """A response that is not 200 with a usable prediction; the message quotes it (truncated)."""


def _check_status(response: requests.Response) -> None:
    if response.status_code != 200:
        raise BadResponse(f"HTTP {response.status_code}: {response.text[:200]}")


def check_probabilities(body: dict, classes: int | None = None) -> None:
    """TF Serving's row-format answer: ``predictions`` = one probability vector summing to ~1."""
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != 1:
        raise BadResponse(f"expected one prediction, got {str(body)[:200]}")
    row = predictions[0]
    if isinstance(row, dict):  # named output form
        row = row.get(OUTPUT_PROBABILITIES)
    if not isinstance(row, list) or (classes and len(row) != classes) or not math.isclose(sum(row), 1, abs_tol=1e-3):
        raise BadResponse(f"expected a probability vector, got {str(row)[:200]}")


def check_top_k(body: object) -> None:
    """The gateway's answer: somewhere a list of up to 5 labelled scores, best first."""
    candidates = [body]
    if isinstance(body, dict):
        candidates += [v for v in body.values() if isinstance(v, list)]
        candidates += [v[0] for v in body.values() if isinstance(v, list) and v and isinstance(v[0], list)]
    for candidate in candidates:
        if isinstance(candidate, list) and 1 <= len(candidate) <= TOP_K and all(
                isinstance(item, (dict, list)) for item in candidate):
            return
    raise BadResponse(f"expected top-{TOP_K} labels, got {str(body)[:200]}")


def uint8_body(image: bytes, size: tuple[int, int]) -> bytes:
    """The ``serving_uint8`` predict body for one encoded image: decoded, resized, raw uint8 as base64."""
    pixels = preprocess(image, size)
    return orjson.dumps({"signature_name": SERVING_UINT8,
                         "instances": [{INPUT_PIXELS_BYTES: {"b64": base64.b64encode(pixels.tobytes()).decode()}}]})


def post_predict(session: requests.Session, predict_url: str, body: bytes, classes: int | None = None) -> None:
    """POST a predict body to the model server and check the answer is one probability vector."""
    response = session.post(predict_url, data=body, headers=JSON_HEADERS, timeout=TIMEOUT)
    _check_status(response)
    check_probabilities(orjson.loads(response.content), classes)


def model_server_send(url: str, model_name: str, images: Sequence[bytes], size: tuple[int, int],
                      classes: int | None = None) -> Send:
    """Decode and resize on the client, then ``serving_uint8`` predict with raw uint8 as base64."""
    predict_url = f"{url}/v1/models/{model_name}:predict"

    def send(session: requests.Session, i: int) -> None:
        post_predict(session, predict_url, uint8_body(images[i % len(images)], size), classes)

    return send


def gateway_send(url: str, route: str, images: Sequence[bytes]) -> Send:
    """POST ``{"b64": <encoded image file>}`` to the gateway's predict URL for ``route``."""
    predict_url = f"{url}/v1/models/{route}/predict"

    def send(session: requests.Session, i: int) -> None:
        # Encoding is the client's work (~1 ms for 700 KB), so it is inside the timed request.
        payload = {"b64": base64.b64encode(images[i % len(images)]).decode()}
        response = session.post(predict_url, data=orjson.dumps(payload), headers=JSON_HEADERS, timeout=TIMEOUT)
        _check_status(response)
        check_top_k(orjson.loads(response.content))

    return send


def tutorial_send(url: str, model_name: str, images: Sequence[bytes], size: tuple[int, int],
                  classes: int | None = None) -> Send:
    """The tutorial's request: float JSON from the standard library into ``serving_default``."""
    predict_url = f"{url}/v1/models/{model_name}:predict"

    def send(session: requests.Session, i: int) -> None:
        pixels = preprocess_tutorial(images[i % len(images)], size)
        body = json.dumps({"signature_name": SERVING_DEFAULT, "instances": [{INPUT_IMAGE: pixels.tolist()}]})
        response = session.post(predict_url, data=body, headers=JSON_HEADERS, timeout=TIMEOUT)
        _check_status(response)
        check_probabilities(json.loads(response.text), classes)

    return send


V2_BINARY = "binary"
V2_JSON = "json"


def v2_send(url: str, model_name: str, images: Sequence[bytes], size: tuple[int, int], classes: int | None,
            encoding: str, preprocessing: str = "tf") -> Send:
    """Decode and resize on the client, then a v2 ``infer``: ``binary`` sends the uint8 pixels as a
    BYTES element of binary data to ``serving_uint8``; ``json`` sends float32 pixels scaled here as
    JSON numbers to ``serving_default``. Scores come back as binary data or JSON to match."""
    infer_url = f"{url}/v2/models/{model_name}/infer"

    def send(session: requests.Session, i: int) -> None:
        pixels = preprocess(images[i % len(images)], size)[None]
        if encoding == V2_BINARY:
            encoded = encode_infer_request(INPUT_PIXELS_BYTES, "raw_uint8_b64", SERVING_UINT8, pixels)
            headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH_HEADER: str(encoded.header_length)}
            body = encoded.body
        else:
            image = scale(pixels, preprocessing)
            body = orjson.dumps({"parameters": {"signature_name": SERVING_DEFAULT},
                                 "inputs": [{"name": INPUT_IMAGE, "shape": list(image.shape), "datatype": "FP32",
                                             "data": image.ravel()}]}, option=orjson.OPT_SERIALIZE_NUMPY)
            headers = JSON_HEADERS
        response = session.post(infer_url, data=body, headers=headers, timeout=TIMEOUT)
        _check_status(response)
        scores = decode_scores(response.content, response.headers.get(HEADER_LENGTH_HEADER), 1, "v2 infer")
        check_probabilities({"predictions": scores.tolist()}, classes)

    return send
