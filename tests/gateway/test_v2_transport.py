"""The gateway's v2 transport: its request bodies and reply decoding as pure functions, its error
translation against a stand-in upstream, and its scores against the real model server's v2 API,
which must equal what the TF Serving REST client gets for the same pixels."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from flask_server.backend import ModelServerClient
from flask_server.errors import BadModelServerReply, ModelNotAvailable, ModelServerUnavailable
from flask_server.model_config import ModelSpec
from flask_server.transport import ModelServerTransport
from flask_server.wire_format import model_input
from flask_server.v2_transport import V2Client, decode_scores, encode_infer_request
from model_server.v2_codec import InferRequest, encode_infer_response, parse_infer_request
from tests.gateway.conftest import TINY, TINY_SIZE, StubReply

PIXELS = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("input_format, datatype", [("raw_uint8_b64", "BYTES"), ("raw_float32_b64", "BYTES"),
                                                    ("json", "FP32")])
def test_request_body_is_binary_tensor_data(input_format, datatype):
    batch = PIXELS if input_format == "raw_uint8_b64" else PIXELS.astype(np.float32) / 127.5 - 1
    encoded = encode_infer_request("in", input_format, "sig", batch)
    header = orjson.loads(encoded.body[:encoded.header_length])
    assert header["parameters"] == {"signature_name": "sig", "binary_data_output": True}
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], encoded.size) == ("in", datatype, 2)
    # The model server's own parser reads what the gateway sends.
    request = parse_infer_request(encoded.body, str(encoded.header_length))
    sent = request.inputs["in"]
    if datatype == "BYTES":
        dtype = np.uint8 if input_format == "raw_uint8_b64" else "<f4"
        sent = np.stack([np.frombuffer(item, dtype).reshape(batch.shape[1:]) for item in sent])
    np.testing.assert_array_equal(sent, batch)


def test_uint8_format_refuses_scaled_pixels():
    with pytest.raises(ValueError, match="takes uint8 pixels"):
        encode_infer_request("in", "raw_uint8_b64", "sig", PIXELS.astype(np.float32))


@pytest.mark.parametrize("binary", [True, False])
def test_scores_from_binary_or_json_replies(binary):
    scores = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    outputs = {"probabilities": scores, "extra": np.array([b"x", b"y"], dtype=object)}
    reply = encode_infer_response("m", "1", InferRequest({}, {}, parameters={"binary_data_output": binary}), outputs)
    header = None if reply.header_length is None else str(reply.header_length)
    np.testing.assert_array_equal(decode_scores(reply.body, header, 2, "where"), scores)
    # A single output needs no particular name.
    reply = encode_infer_response("m", "1", InferRequest({}, {}, parameters={"binary_data_output": binary}),
                                  {"logits": scores.astype(np.float64)})
    header = None if reply.header_length is None else str(reply.header_length)
    np.testing.assert_array_equal(decode_scores(reply.body, header, 2, "where"), scores)


@pytest.mark.parametrize("body, header, message", [
    (b"<html>", None, "the inference response is not a v2 response"),
    (b'{"outputs": [{"name": "a"}, {"name": "b"}]}', None, "expected an output 'probabilities' or a single output"),
    (b'{"outputs": [{"name": "p", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}', None,
     "unreadable scores in output 'p'"),
    (b'{"outputs": [{"name": "p", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]}', None,
     "expected scores of shape [2, classes], got [3]"),
])
def test_bad_replies(body, header, message):
    with pytest.raises(BadModelServerReply, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_scores(body, header, 2, "where")


def test_errors_are_the_gateways(upstream):
    spec = ModelSpec(route="m", model_server_url=upstream.url, model_name="m", input_size=(3, 4))
    client = V2Client(upstream.url)
    upstream.reply = lambda method, path: StubReply(404, b'{"error": "Servable not found for request: Latest(m)"}')
    with pytest.raises(ModelNotAvailable, match="Servable not found"):
        client.model_status("m")
    upstream.reply = lambda method, path: StubReply(503, b'{"error": "queue full"}')
    with pytest.raises(ModelServerUnavailable, match="queue full"):
        client.predict(spec, client.encode(spec, PIXELS), 1, request_id="rid")
    method, path, headers = upstream.requests[-1]
    assert (method, path, headers["X-Request-ID"]) == ("POST", "/v2/models/m/versions/1/infer", "rid")
    assert headers["Content-Type"] == "application/octet-stream"
    with pytest.raises(BadModelServerReply, match="version labels"):
        client.model_metadata("m", label="stable")


def test_servers_without_versions_are_called_unversioned(upstream):
    upstream.reply = lambda method, path: StubReply(body=b'{"name": "m", "platform": "x", "inputs": [], "outputs": []}')
    client = V2Client(upstream.url)
    assert client.model_status("m") == [{"version": "0", "state": "AVAILABLE"}]
    assert client.model_metadata("m", 0) == {"model_spec": {"name": "m", "version": "0"}, "metadata": {}}
    assert upstream.requests[-1][1] == "/v2/models/m"


@pytest.mark.parametrize("signature, input_format, input_name", [
    ("serving_uint8", "raw_uint8_b64", "pixels_bytes"), ("serving_bytes", "raw_float32_b64", "pixels_bytes"),
    ("serving_default", "json", "image")])
def test_same_scores_as_the_rest_client(model_server, signature, input_format, input_name):
    spec = ModelSpec(route="r", model_server_url=model_server.url, model_name=TINY, signature=signature,
                     input_format=input_format, input_name=input_name, input_size=TINY_SIZE)
    pixels = np.random.default_rng(1).integers(0, 256, (3, *TINY_SIZE, 3), dtype=np.uint8)
    batch = np.stack([model_input(spec, image) for image in pixels])
    v2, rest = V2Client(model_server.url), ModelServerClient(model_server.url)
    (status,) = v2.model_status(TINY)
    version = int(status["version"])
    assert [s["version"] for s in rest.model_status(TINY) if s["state"] == "AVAILABLE"] == [status["version"]]
    assert v2.model_metadata(TINY)["metadata"]["export_info"] == rest.model_metadata(TINY)["metadata"]["export_info"]
    scores = v2.predict(spec, v2.encode(spec, batch), version)
    np.testing.assert_allclose(scores, rest.predict(spec, rest.encode(spec, batch), version), rtol=1e-6)
    assert scores.shape == (3, 10)


def test_implements_the_transport_interface():
    assert isinstance(V2Client("http://127.0.0.1:1"), ModelServerTransport)


def test_serving_topk_is_refused_naming_the_setting():
    spec = ModelSpec(route="r", model_server_url="http://127.0.0.1:1", model_name="m", signature="serving_topk")
    client = V2Client(spec.model_server_url)
    with pytest.raises(BadModelServerReply, match=r"set models\.r\.signature to a probabilities signature"):
        client.predict_top_k(spec, client.encode(spec, PIXELS, k=5), 1)
