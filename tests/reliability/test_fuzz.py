"""Property-based tests: whatever bytes or JSON arrive, only the documented error types come out.

(a) image decoding raises only ImageDecodeError; (b) the gateway app (in process, in front of the
real model server) never answers 5xx; (c) the model server's codec and URL parser raise only
ServingError; (d) the running model server never answers 5xx and never dies.
"""

from __future__ import annotations

import http.client
import json
import math
from urllib.parse import quote

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_server.app import create_app
from flask_server.preprocess import ImageDecodeError, decode_image, load_and_preprocess
from model_server import predict_codec, routing
from model_server.errors import ServingError
from model_server.tensor_types import TensorSpec
from tests.reliability.conftest import (INPUT_SIZE, MODEL, PREDICT, assert_healthy, gateway_env, image_bytes,
                                        write_gateway_models)
from tests.reliability.corpus import GOOD, JPEG, PNG, animated_gif

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
# Small enough that a fuzzed header claiming a big image is refused instead of allocated.
FUZZ_MAX_PIXELS = 1_000_000
SEEDS = [PNG, JPEG, animated_gif(), image_bytes((16, 16), "BMP"), image_bytes((16, 16), "WEBP"),
         image_bytes((16, 16), "GIF")]

# --- strategies --------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=20))
json_keys = st.sampled_from(["b64", "instances", "inputs", "signature_name", "image", "pixels_bytes"]) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(json_keys, inner, max_size=4), max_leaves=20)


@st.composite
def mutated_images(draw) -> bytes:
    """A real image file, then truncated, with bytes flipped, or with random bytes spliced in."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["truncate", "flip", "splice"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "truncate":
            del data[at:]
        elif action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        else:
            data[at:at] = draw(st.binary(max_size=32))
    return bytes(data)


image_like = st.binary(max_size=512) | mutated_images()


def b64_strings() -> st.SearchStrategy[str]:
    return (st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=-_ \n\t", max_size=64)
            | st.text(max_size=20) | image_like.map(lambda b: __import__("base64").b64encode(b).decode()))


gateway_json = (json_values
                | st.fixed_dictionaries({"b64": b64_strings() | json_values})
                | st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries({"b64": b64_strings()})
                                                               | json_values, max_size=6) | json_values}))
content_types = st.sampled_from(["application/json", "application/vnd.api+json", "image/png", "image/jpeg",
                                 "text/plain", "application/octet-stream", "application/x-www-form-urlencoded",
                                 "multipart/form-data", "multipart/form-data; boundary=xyz", "", "image/"])

# --- (a) image decoding -----------------------------------------------------------------------


# Random and mutated image bytes: decode_image raises ImageDecodeError or returns an RGB image.
@FUZZ
@given(data=image_like)
@example(data=b"")
@example(data=PNG[:8])
def test_decode_image_raises_only_image_decode_errors(data):
    try:
        image = decode_image(data, FUZZ_MAX_PIXELS)
    except ImageDecodeError:
        return
    assert image.mode == "RGB" and image.width * image.height <= FUZZ_MAX_PIXELS


# Same for the full pipeline: a float32 (H, W, 3) array in range, or ImageDecodeError.
@FUZZ
@given(data=image_like, mode=st.sampled_from(["tf", "caffe", "torch", "none"]))
def test_load_and_preprocess_raises_only_image_decode_errors(data, mode):
    try:
        array = load_and_preprocess(data, INPUT_SIZE, mode, max_pixels=FUZZ_MAX_PIXELS)
    except ImageDecodeError:
        return
    assert array.shape == (*INPUT_SIZE, 3) and array.dtype == np.float32 and np.isfinite(array).all()


# --- (b) the gateway app in front of the real model server ---------------------------------------

@pytest.fixture(scope="module")
def gateway_client(model_server, model_dir):
    toml = write_gateway_models(model_dir / "fuzz_gateway.toml", {MODEL: (model_server.url, MODEL)},
                                model_dir / "labels.txt")
    return create_app(gateway_env(toml)).test_client()


# Random JSON documents (and JSON-ish shapes around b64/instances): always < 500.
@FUZZ
@given(document=gateway_json, top_k=st.none() | st.text(max_size=6) | st.integers(-5, 20).map(str))
def test_gateway_never_5xx_on_random_json(gateway_client, document, top_k):
    query = {} if top_k is None else {"top_k": top_k}
    response = gateway_client.post(PREDICT, data=json.dumps(document), query_string=query,
                                   content_type="application/json")
    assert response.status_code < 500, response.get_data(as_text=True)
    assert set(response.get_json()) == {"error", "request_id"} if response.status_code >= 400 else True


# Random bodies under random Content-Types: always < 500.
@FUZZ
@given(body=image_like, content_type=content_types)
def test_gateway_never_5xx_on_random_bodies(gateway_client, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = gateway_client.post(PREDICT, data=body, headers=headers)
    assert response.status_code < 500, response.get_data(as_text=True)


# Random route names and paths on the gateway: 4xx, never 5xx.
@FUZZ
@given(route=st.text(max_size=30))
def test_gateway_never_5xx_on_random_routes(gateway_client, route):
    response = gateway_client.post(f"/v1/models/{quote(route, safe='')}/predict", json=GOOD)
    assert response.status_code < 500, response.get_data(as_text=True)


# --- (c) the model server's codec and URL grammar ------------------------------------------------

SIGNATURE_INPUTS = {
    "serving_default": {"image": TensorSpec("DT_FLOAT", (None, 32, 32, 3))},
    "serving_bytes": {"pixels_bytes": TensorSpec("DT_STRING", (None,))},
    "mixed": {"a": TensorSpec("DT_INT32", (None,)), "b": TensorSpec("DT_BOOL", None),
              "c": TensorSpec("DT_UINT8", (None, 2)), "d": TensorSpec("DT_HALF", (None,))},
}

predict_bodies = (st.binary(max_size=200)
                  | json_values.map(lambda v: json.dumps(v).encode())
                  | st.fixed_dictionaries({}, optional={"signature_name": json_values, "instances": json_values,
                                                        "inputs": json_values}).map(lambda v: json.dumps(v).encode()))


# parse_predict_body + request_to_tensors on anything: tensors, or ServingError.
@FUZZ
@given(body=predict_bodies, signature=st.sampled_from(sorted(SIGNATURE_INPUTS)))
@example(body=b'{"instances": [1e999, NaN, -Infinity]}', signature="serving_default")
@example(body=b'{"instances": [123456789012345678901234567890]}', signature="mixed")
def test_codec_raises_only_serving_errors(body, signature):
    try:
        request = predict_codec.parse_predict_body(body)
        tensors = predict_codec.request_to_tensors(request, SIGNATURE_INPUTS[signature])
    except ServingError:
        return
    assert all(isinstance(t, np.ndarray) for t in tensors.values())


url_paths = st.builds(lambda parts: "/" + "".join(parts), st.lists(
    st.sampled_from(["v1", "models", "/", ":", "predict", "classify", "versions", "labels", "metadata", "%2f",
                     "%2e", "..", "%", "%zz", "?", "tiny", "9" * 25, "-1", "\n"]) | st.text(max_size=4), max_size=12))
# Standard methods (an unknown one such as BREW is a fixed case in the corpus: ms_unknown_http_method).
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get"])


# parse_request on any method and path: a ModelRequest with a non-empty name, or ServingError.
@FUZZ
@given(method=methods, path=url_paths | st.text(max_size=60))
def test_routing_raises_only_serving_errors(method, path):
    try:
        request = routing.parse_request(method, path)
    except ServingError:
        return
    assert request.name and (request.version is None or request.version >= 0)


# --- (d) the running model server ------------------------------------------------------------------

http_bodies = predict_bodies | st.fixed_dictionaries(
    {"signature_name": st.sampled_from(["serving_default", "serving_bytes", ""]),
     "instances": st.lists(json_values | st.fixed_dictionaries({"b64": b64_strings()}), min_size=1, max_size=3)}
).map(lambda v: json.dumps(v).encode())


def _http_call(server, method: str, path: str, body: bytes | None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# Random bodies to :predict and random paths: never 5xx, the process never dies.
@FUZZ
@given(body=http_bodies)
def test_model_server_never_5xx_on_random_bodies(model_server, body):
    status = _http_call(model_server, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status < 500, body[:300]


@FUZZ
@given(method=methods.filter(lambda m: m != "get"), path=url_paths)
def test_model_server_never_5xx_on_random_paths(model_server, method, path):
    safe_path = quote(path, safe="/:%?=&")
    status = _http_call(model_server, method, safe_path, b"{}" if method == "POST" else None)
    assert status < 500, (method, safe_path)


def test_servers_survive_the_fuzzing(stack, good_png):
    assert_healthy(stack, good_png)
    assert math.isfinite(requests.get(stack.model_server.url + "/monitoring/prometheus/metrics", timeout=5)
                         .text.count("\n"))
