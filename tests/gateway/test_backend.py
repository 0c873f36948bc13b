"""The TF Serving client against a local stand-in for a misbehaving upstream: each failure maps to
its gateway error and HTTP status, and the request it sends is exactly the documented one."""

from __future__ import annotations

import base64
import json
import threading

import numpy as np
import orjson
import pytest

from flask_server.backend import ModelServerClient, VersionTracker, decode_predictions, encode_predict_request
from flask_server.errors import BadModelServerReply, ModelNotAvailable, ModelServerTimeout, ModelServerUnavailable
from flask_server.models import ModelSpec
from tests.gateway.conftest import PREDICT, StubReply, assert_error, closed_port_url, status_reply

SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2))
FLOAT32_SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2),
                         signature="serving_bytes", input_format="raw_float32_b64")
PREDICTIONS = json.dumps({"predictions": [[0.1, 0.9]]}).encode()


def routed(status=None, metadata=b'{"model_spec": {"version": "1"}, "metadata": {}}', predict=None):
    """An upstream reply function: a healthy model status and metadata unless overridden."""
    def reply(method, path):
        if path.endswith(":predict"):
            return predict or StubReply(body=PREDICTIONS)
        if path.endswith("/metadata"):
            return StubReply(body=metadata)
        return status or StubReply(body=status_reply(1))
    return reply


def test_predict_sends_raw_uint8_b64_with_the_request_id(upstream):
    upstream.reply = routed()
    batch = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    scores = ModelServerClient(upstream.url).predict(SPEC, batch, 7, request_id="rid-1")
    np.testing.assert_array_equal(scores, np.float32([[0.1, 0.9]]))
    method, path, headers = upstream.requests[-1]
    assert (method, path, headers["X-Request-ID"]) == ("POST", "/v1/models/m/versions/7:predict", "rid-1")


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


def test_version_tracker_retries_once_after_a_hot_swap(upstream):
    """Version 1 is unloaded between the status and the predict call: refresh, call version 2."""
    state = {"version": 1}

    def reply(method, path):
        if path.endswith(":predict"):
            if "/versions/2:" in path:
                return StubReply(body=PREDICTIONS)
            state["version"] = 2
            return StubReply(status=404, body=b'{"error": "Servable not found for request: Specific(m, 1)"}')
        return StubReply(body=status_reply(state["version"]))
    upstream.reply = reply
    client = ModelServerClient(upstream.url)
    tracker = VersionTracker(client, "m")
    scores, version = tracker.predict(lambda v: client.predict(SPEC, np.zeros((1, 2, 2, 3), np.uint8), v))
    assert version == 2 and scores.shape == (1, 2)
    assert [p for _, p, _ in upstream.requests if p.endswith(":predict")] == [
        "/v1/models/m/versions/1:predict", "/v1/models/m/versions/2:predict"]


def test_version_tracker_resolves_labels_through_metadata(upstream):
    upstream.reply = routed(metadata=b'{"model_spec": {"name": "m", "version": "4"}, "metadata": {}}')
    tracker = VersionTracker(ModelServerClient(upstream.url), "m", label="stable")
    assert tracker.current() == 4
    assert upstream.requests[-1][1] == "/v1/models/m/labels/stable/metadata"


def test_version_tracker_caches_status_for_its_ttl(upstream):
    now = [0.0]
    upstream.reply = routed()
    tracker = VersionTracker(ModelServerClient(upstream.url), "m", ttl=1.0, clock=lambda: now[0])
    tracker.current()
    tracker.current()
    now[0] = 1.5
    tracker.current()
    assert len(upstream.requests) == 2


class ScriptedTracker(VersionTracker):
    """A tracker whose ``_resolve`` returns scripted versions, each after an optional gate opens, so a
    test decides exactly when each of two concurrent resolves answers."""

    def __init__(self, script: list[tuple[int, threading.Event | None]]) -> None:
        super().__init__(ModelServerClient(closed_port_url()), "m", clock=lambda: 0.0)
        self.script = script
        self.entered = [threading.Event() for _ in script]
        self.calls = 0

    def _resolve(self) -> int:
        index, self.calls = self.calls, self.calls + 1
        version, gate = self.script[index]
        self.entered[index].set()
        if gate is not None:
            assert gate.wait(10), "the test never opened the gate"
        return version


def test_a_slow_resolve_never_replaces_a_newer_one():
    """During a hot swap: thread A reads the status (v1), then B reads it (v2) and stores v2 first;
    A's late v1 must not overwrite it, and A itself goes on with v2."""
    release_a = threading.Event()
    tracker = ScriptedTracker([(1, release_a), (2, None)])
    results: dict[str, int] = {}
    thread_a = threading.Thread(target=lambda: results.update(a=tracker.current()))
    thread_a.start()
    assert tracker.entered[0].wait(10)
    results["b"] = tracker.current()  # starts after A, answers before it
    release_a.set()
    thread_a.join(10)
    assert results == {"a": 2, "b": 2}
    assert tracker.current() == 2 and tracker.calls == 2  # cached, not resolved again


def test_a_later_resolve_replaces_an_earlier_one():
    """The ordinary order: the resolve that started last is stored, even with a lower version (a
    rollback that unloaded v2 must be followed)."""
    release_a = threading.Event()
    tracker = ScriptedTracker([(2, release_a), (1, None)])
    thread_a = threading.Thread(target=tracker.current)
    thread_a.start()
    assert tracker.entered[0].wait(10)
    assert tracker.current() == 1
    release_a.set()
    thread_a.join(10)
    assert tracker.current() == 1


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
