"""The TF Serving REST client against a local stand-in for a misbehaving upstream: each failure maps
to its gateway error and HTTP status, and the request it sends is exactly the documented one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flask_server.backend import ModelServerClient
from flask_server.errors import BadModelServerReply, ModelNotAvailable, ModelServerTimeout, ModelServerUnavailable
from flask_server.model_config import ModelSpec
from tests.gateway.conftest import PREDICT, StubReply, assert_error, closed_port_url, routed, status_reply

SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2))


def test_predict_sends_raw_uint8_b64_with_the_request_id(upstream):
    upstream.reply = routed()
    batch = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    client = ModelServerClient(upstream.url)
    scores = client.predict(SPEC, client.encode(SPEC, batch), 7, request_id="rid-1")
    np.testing.assert_array_equal(scores, np.float32([[0.1, 0.9]]))
    method, path, headers = upstream.requests[-1]
    assert (method, path, headers["X-Request-ID"]) == ("POST", "/v1/models/m/versions/7:predict", "rid-1")


@pytest.mark.parametrize("reply, error, message", [
    (StubReply(body=b"<html>oops</html>", content_type="text/html"), BadModelServerReply, "not a JSON object"),
    (StubReply(body=b"[1, 2]"), BadModelServerReply, "not a JSON object"),
    (StubReply(status=400, body=b'{"error": "Expected 12 values"}'), BadModelServerReply,
     "rejected the gateway's request for model 'm' (400): Expected 12 values"),
    (StubReply(status=500, body=b"boom", content_type="text/plain"), BadModelServerReply,
     "failed for model 'm' (500): 'boom'"),
    (StubReply(status=404, body=b'{"error": "Servable not found for request: Latest(m)"}'), ModelNotAvailable,
     "Servable not found"),
    (StubReply(status=503, body=b'{"error": "queue full"}'), ModelServerUnavailable, "queue full"),
    (StubReply(delay=1.0), ModelServerTimeout, "did not answer within 0.3 s"),
])
def test_upstream_failures_map_to_gateway_errors(upstream, reply, error, message):
    upstream.reply = lambda method, path: reply
    client = ModelServerClient(upstream.url, timeout=(1.0, 0.3))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        client.model_status("m")
    assert info.value.__cause__ is not None or error is not ModelServerTimeout
    # the client's message never holds the model server's address; the log's does
    assert upstream.url not in info.value.message and upstream.url in info.value.log_message


def test_connection_refused_is_unavailable():
    with pytest.raises(ModelServerUnavailable, match="Connection refused") as info:
        ModelServerClient(closed_port_url()).model_status("m")
    assert info.value.__cause__ is not None  # chained, so the log keeps the original


# test the same failures through the gateway's HTTP API
def test_gateway_504_when_the_model_server_is_too_slow(make_app, upstream, png):
    upstream.reply = lambda method, path: StubReply(body=status_reply(), delay=1.0)
    client = make_app(MODEL_SERVER_URL=upstream.url, GATEWAY_BACKEND_TIMEOUT="0.3").test_client()
    assert_error(client.post(PREDICT, data=png, content_type="image/png"), 504, "did not answer within 0.3 s")


def test_gateway_502_when_the_model_server_answers_garbage(make_app, upstream, png):
    upstream.reply = routed(predict=StubReply(body=b"\x00garbage", content_type="application/octet-stream"))
    client = make_app(MODEL_SERVER_URL=upstream.url).test_client()
    assert_error(client.post(PREDICT, data=png, content_type="image/png"), 502, "not a JSON object")


def test_gateway_502_when_labels_do_not_fit_the_model(make_app, upstream, png):
    upstream.reply = routed()  # two scores per image, but ImageNet has 1000 labels
    client = make_app(MODEL_SERVER_URL=upstream.url).test_client()
    assert_error(client.post(PREDICT, data=png, content_type="image/png"), 502, "1000 labels")


def test_models_list_never_500s(make_app, upstream):
    upstream.reply = lambda method, path: StubReply(body=b"garbage")
    client = make_app(MODEL_SERVER_URL=upstream.url).test_client()
    response = client.get("/v1/models")
    assert response.status_code == 200
    [model] = response.get_json()["models"]
    assert model["state"] == "UNAVAILABLE" and "not a JSON object" in model["error"]
    assert client.get("/readyz").status_code == 503
    # the model server's address is internal: not in any client-facing body
    for path in ("/v1/models", "/v1/models/imageclassifier", "/readyz"):
        assert upstream.url.removeprefix("http://") not in client.get(path).get_data(as_text=True), path


def test_missing_metadata_does_not_fail_a_prediction(make_app, upstream, png):
    """export_info only adds a warning and a size check; a model server without it still serves."""
    scores = json.dumps({"predictions": [[i / 1000 for i in range(1000)]]}).encode()
    healthy = routed(predict=StubReply(body=scores))
    upstream.reply = lambda method, path: (StubReply(status=500, body=b'{"error": "no metadata"}')
                                           if path.endswith("/metadata") else healthy(method, path))
    client = make_app(MODEL_SERVER_URL=upstream.url).test_client()
    response = client.post(PREDICT, data=png, content_type="image/png")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model_version"] == 1 and "warning" not in body
    assert body["predictions"][0]["score"] == pytest.approx(0.999)
