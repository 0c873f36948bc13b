"""The gateway's gRPC transport against the real model server: the same answers as the REST client,
and every gRPC failure translated into the gateway's error tree."""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from flask_server.app import create_app
from flask_server.backend import ModelServerClient
from flask_server.errors import BadModelServerReply, ModelNotAvailable, ModelServerTimeout, ModelServerUnavailable
from flask_server import grpc_messages as messages
from flask_server.grpc_transport import GrpcTransport, grpc_target
from flask_server.model_config import spec_from_table
from flask_server.transport import ModelServerTransport
from flask_server.wire_format import model_input
from tests.gateway.conftest import STABLE_LABEL, TEST_RATE_LIMITS, TINY, TINY_SIZE
from tests.support.processes import free_port

TIMEOUTS = (2.0, 30.0)
SIGNATURES = ["serving_uint8", "serving_bytes", "serving_default"]
PIXELS = np.random.default_rng(3).integers(0, 256, (3, *TINY_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def grpc_client(model_server):
    transport = GrpcTransport(model_server.extra["grpc_url"], TIMEOUTS)
    yield transport
    transport.close()


@pytest.fixture(scope="module")
def rest_client(model_server):
    client = ModelServerClient(model_server.url, TIMEOUTS)
    yield client
    client.close()


def spec_for(signature: str, url: str = "grpc://unused:1"):
    return spec_from_table("r", {"model_name": TINY, "signature": signature, "input_size": list(TINY_SIZE)},
                           Path("test"), url)


def test_it_implements_the_transport_interface(grpc_client):
    assert isinstance(grpc_client, ModelServerTransport)


def test_grpc_target_takes_the_scheme_off():
    assert grpc_target("grpc://10.0.0.5:8500") == "10.0.0.5:8500" and grpc_target("host:1") == "host:1"


def test_status_and_metadata_match_rest(grpc_client, rest_client):
    assert grpc_client.model_status(TINY) == rest_client.model_status(TINY)
    by_label = grpc_client.model_metadata(TINY, label=STABLE_LABEL)
    over_rest = rest_client.model_metadata(TINY, label=STABLE_LABEL)
    assert by_label["model_spec"]["version"] == over_rest["model_spec"]["version"] == "1"
    assert by_label["metadata"]["export_info"] == over_rest["metadata"]["export_info"]
    assert by_label["metadata"]["export_info"]["weights"] == "untrained"


@pytest.mark.parametrize("signature", SIGNATURES)
def test_predict_gives_the_rest_scores(grpc_client, rest_client, model_server, signature):
    spec = spec_for(signature)
    batch = np.stack([model_input(spec, image) for image in PIXELS])
    by_grpc = grpc_client.predict(spec, grpc_client.encode(spec, batch), 1, request_id="grpc-transport-test")
    by_rest = rest_client.predict(spec, rest_client.encode(spec, batch), 1)
    assert by_grpc.dtype == np.float32 and by_grpc.shape == by_rest.shape == (3, 10)
    np.testing.assert_allclose(by_grpc, by_rest, atol=1e-6)
    deadline = time.monotonic() + 5  # the request id reaches the model server's access log
    while "request_id=grpc-transport-test" not in model_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"gRPC Predict tiny" OK' in model_server.log() and "request_id=grpc-transport-test" in model_server.log()


def test_serving_topk_gives_the_rest_answer(grpc_client, rest_client):
    spec = spec_for("serving_topk")
    by_grpc = grpc_client.predict_top_k(spec, grpc_client.encode(spec, PIXELS, 3), 1)
    by_rest = rest_client.predict_top_k(spec, rest_client.encode(spec, PIXELS, 3), 1)
    assert by_grpc.scores.shape == (3, 3) and by_grpc.class_index.tolist() == by_rest.class_index.tolist()
    np.testing.assert_allclose(by_grpc.scores, by_rest.scores, atol=1e-6)
    assert (by_grpc.class_id, by_grpc.class_label) == (by_rest.class_id, by_rest.class_label)
    with pytest.raises(ValueError, match="serving_topk needs k"):
        grpc_client.encode(spec, PIXELS)


def test_uint8_input_refuses_scaled_pixels(grpc_client):
    with pytest.raises(ValueError, match="takes uint8 pixels"):
        grpc_client.encode(spec_for("serving_uint8"), PIXELS.astype(np.float32))


def test_unknown_model_and_version_are_not_available(grpc_client):
    with pytest.raises(ModelNotAvailable, match="model 'nope' is not available"):
        grpc_client.model_status("nope")
    spec = spec_for("serving_uint8")
    with pytest.raises(ModelNotAvailable, match="Servable not found for request: Specific"):
        grpc_client.predict(spec, grpc_client.encode(spec, PIXELS), 9)


def test_a_signature_the_model_lacks_is_a_bad_reply(grpc_client):
    spec = spec_for("serving_uint8")
    with pytest.raises(BadModelServerReply, match="FAILED_PRECONDITION"):
        grpc_client.predict(dataclasses.replace(spec, signature="nope"), grpc_client.encode(spec, PIXELS), None)


def test_nothing_listening_is_unavailable_without_the_address():
    port = free_port()
    transport = GrpcTransport(f"grpc://127.0.0.1:{port}", TIMEOUTS)
    try:
        with pytest.raises(ModelServerUnavailable) as caught:
            transport.model_status(TINY)
    finally:
        transport.close()
    assert caught.value.message == "model server unavailable for model 'tiny': connection refused"
    assert str(port) in caught.value.detail  # the address is for the log only


class StatusError(Exception):
    def __init__(self, code, details: str):
        super().__init__(details)
        self.code, self.details = code, details


@pytest.fixture
def stub_upstream():
    """A gRPC server standing in for a broken model server: ``behaviour["predict"](request) -> reply``."""
    behaviour = {}

    def handler(name):
        def handle(request, context):
            try:
                return behaviour[name](request)
            except StatusError as exc:
                context.abort(exc.code, exc.details)
        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": handler("predict"), "GetModelMetadata": handler("metadata")})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"grpc://127.0.0.1:{port}", behaviour
    server.stop(0)


def test_a_server_without_export_info_gets_asked_for_signature_defs_only(stub_upstream):
    """tensorflow_model_server refuses the export_info field: ask again for what it has, and remember."""
    url, behaviour = stub_upstream
    asked = []

    def metadata(request):
        fields = [bytes(v).decode() for number, _, v in messages.fields(request) if number == 2]
        asked.append(fields)
        if fields != ["signature_def"]:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {fields[0]} is not supported")
        return messages.with_model_spec(messages.model_spec("tiny", 4), b"")

    behaviour["metadata"] = metadata
    transport = GrpcTransport(url, TIMEOUTS)
    try:
        for _ in range(2):
            assert transport.model_metadata(TINY) == {"model_spec": {"name": "tiny", "version": "4"}, "metadata": {}}
    finally:
        transport.close()
    assert asked == [["export_info"], ["signature_def"], ["signature_def"]]


def test_a_slow_model_server_is_a_timeout(stub_upstream):
    url, behaviour = stub_upstream
    behaviour["predict"] = lambda request: time.sleep(2) or b""
    transport = GrpcTransport(url, (2.0, 0.3))
    spec = spec_for("serving_uint8")
    try:
        with pytest.raises(ModelServerTimeout, match="did not answer within 0.3 s for model 'tiny'"):
            transport.predict(spec, transport.encode(spec, PIXELS), 1)
    finally:
        transport.close()


@pytest.mark.parametrize("reply, message", [
    (b"\x0a\xff", "broken gRPC reply"),                 # a field longer than the message
    (b"", "expected 'probabilities' with 3 row(s), got outputs {}"),
])
def test_garbage_replies_are_bad_replies(stub_upstream, reply, message):
    url, behaviour = stub_upstream
    behaviour["predict"] = lambda request: reply
    transport = GrpcTransport(url, TIMEOUTS)
    spec = spec_for("serving_uint8")
    try:
        with pytest.raises(BadModelServerReply, match=re.escape(message)):
            transport.predict(spec, transport.encode(spec, PIXELS), 1)
    finally:
        transport.close()


# -- the gateway with protocol = "grpc" ------------------------------------------------------------

@pytest.fixture(scope="module")
def grpc_gateway(model_server, tiny_models, tmp_path_factory):
    """An in-process gateway serving the tiny model twice: route ``rest`` over REST, ``grpc`` over gRPC."""
    toml = tmp_path_factory.mktemp("grpc-gateway") / "models.toml"
    routes = {"rest": f'model_server_url = "{model_server.url}"',
              "grpc": f'protocol = "grpc"\nmodel_server_url = "{model_server.extra["grpc_url"]}"',
              "grpc_label": f'model_server_url = "{model_server.extra["grpc_url"]}"\n'
                            f'version_label = "{STABLE_LABEL}"\nsignature = "serving_default"'}
    labels = tiny_models.root / "tiny_labels.txt"
    toml.write_text("".join(f'[models.{route}]\nmodel_name = "{TINY}"\ninput_size = [{TINY_SIZE[0]}, {TINY_SIZE[1]}]\n'
                            f'labels = "{labels}"\n{extra}\n\n' for route, extra in routes.items()))
    app = create_app({"MODEL_SERVER_URL": model_server.url, "MODELS_CONFIG": str(toml),
                      "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS})
    return app.test_client()


def test_grpc_route_answers_what_the_rest_route_answers(grpc_gateway, png):
    answers = {}
    for route in ("rest", "grpc", "grpc_label"):
        response = grpc_gateway.post(f"/v1/models/{route}/predict?top_k=10", json={"b64": base64.b64encode(png).decode()})
        assert response.status_code == 200, response.get_data(as_text=True)
        answers[route] = response.get_json()
    assert answers["grpc"]["model_version"] == answers["rest"]["model_version"] == answers["grpc_label"][
        "model_version"] == 1
    for route in ("grpc", "grpc_label"):
        assert answers[route]["warning"] == answers["rest"]["warning"]  # untrained: export_info over gRPC too
        assert [p["wnid"] for p in answers[route]["predictions"]] == [p["wnid"] for p in answers["rest"]["predictions"]]
        np.testing.assert_allclose([p["score"] for p in answers[route]["predictions"]],
                                   [p["score"] for p in answers["rest"]["predictions"]], atol=1e-5)
    models = grpc_gateway.get("/v1/models").get_json()
    assert models  # the status of gRPC routes is read over gRPC too
    assert "AVAILABLE" in str(models)
