"""The predict request bodies the gateway sends and the replies it accepts (wire_format.py)."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest

from flask_server.errors import BadModelServerReply
from flask_server.model_config import ModelSpec
from flask_server.wire_format import decode_predictions, decode_top_k, encode_predict_request

SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2))
FLOAT32_SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2),
                         signature="serving_bytes", input_format="raw_float32_b64")


def test_request_bodies():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    body = json.loads(encode_predict_request(SPEC, pixels))
    assert body["signature_name"] == "serving_uint8"
    raw = base64.b64decode(body["instances"][1]["pixels_bytes"]["b64"])
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(2, 2, 3), pixels[1])
    batch = pixels.astype(np.float32) / 127.5 - 1
    body = json.loads(encode_predict_request(FLOAT32_SPEC, batch))
    assert body["signature_name"] == "serving_bytes"
    raw = base64.b64decode(body["instances"][1]["pixels_bytes"]["b64"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 2, 3), batch[1])
    json_spec = ModelSpec(route="m", model_server_url="http://x", signature="serving_default",
                          input_name="image", input_format="json", input_size=(2, 2))
    body = json.loads(encode_predict_request(json_spec, batch))
    assert body["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.float32(body["instances"][1]["image"]), batch[1])  # shortest repr round-trips


@pytest.mark.parametrize("batch, input_format, wire_dtype", [
    (np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3), "raw_float32_b64", "<f4"),
    (np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3)[:, ::-1], "raw_float32_b64", "<f4"),  # not contiguous
    (np.linspace(-1, 1, 12).reshape(1, 2, 2, 3), "raw_float32_b64", "<f4"),  # float64: sent as float32
    (np.arange(200, 224, dtype=np.uint8).reshape(2, 2, 2, 3), "raw_uint8_b64", "u1"),
    (np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)[:, :, ::-1], "raw_uint8_b64", "u1"),  # not contiguous
])
def test_raw_body_is_what_orjson_would_write(batch, input_format, wire_dtype):
    # The raw_*_b64 bodies are joined from bytes, not serialised: they must be byte for byte
    # the document the slower orjson.dumps route gives.
    spec = ModelSpec(route="m", model_server_url="http://x", signature="sig\"n", input_name="in\\put",
                     input_format=input_format)
    instances = [{spec.input_name: {"b64": base64.b64encode(image.astype(wire_dtype).tobytes()).decode()}}
                 for image in batch]
    expected = orjson.dumps({"signature_name": spec.signature, "instances": instances})
    assert encode_predict_request(spec, batch) == expected


def test_uint8_format_refuses_scaled_pixels():
    # Casting preprocessed floats to uint8 would send garbage that still has the right length.
    with pytest.raises(ValueError, match="uint8"):
        encode_predict_request(SPEC, np.zeros((1, 2, 2, 3), np.float32))


@pytest.mark.parametrize("reply", [
    {"predictions": [[0.1, 0.9], [0.2]]},
    {"predictions": [0.1, 0.9]},
    {"outputs": [[0.1, 0.9]]},
    {"predictions": [{"other": [1.0]}]},
])
def test_unexpected_predictions_are_bad_replies(reply):
    with pytest.raises(BadModelServerReply):
        decode_predictions(reply, 1, "test")


TOPK_SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2),
                      signature="serving_topk")


def test_serving_topk_requests_send_k_with_every_image():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    body = json.loads(encode_predict_request(TOPK_SPEC, pixels, 3))
    assert body["signature_name"] == "serving_topk"
    assert [sorted(instance) for instance in body["instances"]] == [["k", "pixels_bytes"]] * 2
    assert [instance["k"] for instance in body["instances"]] == [3, 3]
    with pytest.raises(ValueError, match="serving_topk needs k"):
        encode_predict_request(TOPK_SPEC, pixels)


def test_serving_topk_replies():
    reply = {"predictions": [{"scores": [0.7, 0.2], "class_index": [4, 0], "class_id": ["n4", "n0"],
                              "class_label": ["tabby", "tench"]}]}
    answer = decode_top_k(reply, 1, "where")
    np.testing.assert_array_equal(answer.scores, np.float32([[0.7, 0.2]]))
    assert answer.class_index.tolist() == [[4, 0]] and answer.class_label == [["tabby", "tench"]]
    assert answer.class_id == [["n4", "n0"]]


@pytest.mark.parametrize("reply", [
    {"predictions": [[0.1, 0.9]]},  # a probabilities reply
    {"predictions": [{"scores": [0.7], "class_index": [4], "class_id": ["n4"]}]},  # no labels
    {"predictions": [{"scores": [0.7, 0.2], "class_index": [4, 0], "class_id": ["n4"], "class_label": ["a", "b"]}]},
    {"predictions": []},
])
def test_bad_serving_topk_replies_are_502s(reply):
    with pytest.raises(BadModelServerReply, match="^where: expected 'predictions' with 1 row"):
        decode_top_k(reply, 1, "where")
