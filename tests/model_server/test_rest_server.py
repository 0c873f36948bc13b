"""The REST front: ``RestApi`` answered in-process, ``RestServer`` through a real process.

As TF Serving's http_rest_api_handler_test calls ``ProcessRequest`` without a socket, most cases
here call ``RestApi.handle(method, path, body)`` on a repository holding real exported versions:
``tiny`` (versions 1 and 2, labels stable=1 and canary=2), ``half_plus_two`` (classify/regress)
and ``slow`` (deadline). Only what needs the HTTP layer or a process (the body limit on the socket,
keep-alive, the access log, metrics, SIGTERM) runs against one real ``python -m model_server``,
marked e2e. The graceful-shutdown test stops that server, so it comes last.
"""

from __future__ import annotations

import base64
import http.client
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
import requests

from model_server.repository import STATE_AVAILABLE, ModelRepository
from model_server.rest_server import RestApi
from model_server.servable import load_servable
from tests.model_server.conftest import TINY_INPUT, model_config_text

pytestmark = pytest.mark.timeout(180)

TIMEOUT_MS = 2000
LABELS = {"stable": 1, "canary": 2}


@pytest.fixture(scope="module")
def repository(model_paths) -> ModelRepository:
    """Every test model loaded in-process, as the version manager would leave them."""
    repository = ModelRepository()
    versions = {"tiny": (1, 2), "half_plus_two": (1,), "slow": (1,)}
    for name, numbers in versions.items():
        for version in numbers:
            servable = load_servable(name, version, model_paths[name] / str(version), warm_up=False)
            repository.set_state(name, version, STATE_AVAILABLE, servable)
    repository.set_labels("tiny", LABELS)
    return repository


@pytest.fixture(scope="module")
def submit():
    """Model calls on a pool, as the server runs them without batching."""
    with ThreadPoolExecutor(4, thread_name_prefix="test-model-call") as pool:
        yield lambda handle, signature, tensors: pool.submit(handle.servable.run, signature, tensors)


@pytest.fixture(scope="module")
def api(repository, submit):
    """The handler over the repository, with the e2e server's deadline (no socket)."""
    return RestApi(repository, submit, TIMEOUT_MS / 1000)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, *TINY_INPUT, 3), dtype=np.float32)


def handle(api, method, path, payload=None, data=None):
    """(status, parsed JSON body, ApiResponse) of one request."""
    body = data if data is not None else (orjson.dumps(payload) if payload is not None else b"")
    response = api.handle(method, path, body)
    return response.http_status, orjson.loads(response.body), response


def get(api, path):
    return handle(api, "GET", path)


def post(api, path, payload=None, data=None):
    return handle(api, "POST", path, payload, data)


def predict(api, path, images, **extra):
    status, body, _ = post(api, path, {"instances": images.tolist(), **extra})
    assert status == 200, body
    return np.array(body["predictions"])


def assert_error(answer, status, fragment):
    got_status, body, _ = answer
    assert got_status == status, body
    assert set(body) == {"error"}
    assert fragment in body["error"], body["error"]


# -- status and metadata -------------------------------------------------------------------------

def test_status_lists_versions_highest_first(api):
    status, body, response = get(api, "/v1/models/tiny")
    assert status == 200 and response.api == "GetModelStatus" and response.model_name == "tiny"
    assert body == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("2", "1")]}


def test_status_of_one_version_and_label(api):
    assert [s["version"] for s in get(api, "/v1/models/tiny/versions/1")[1]["model_version_status"]] == ["1"]
    # GetModelStatus ignores the label, as the real server does.
    assert len(get(api, "/v1/models/tiny/labels/stable")[1]["model_version_status"]) == 2


def test_metadata_is_signature_def_map_plus_export_info(api):
    status, body, response = get(api, "/v1/models/tiny/versions/1/metadata")
    assert status == 200 and response.api == "GetModelMetadata" and response.version == "1"
    assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["inputs"]["image"]["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
    assert signatures["serving_bytes"]["inputs"]["pixels_bytes"]["dtype"] == "DT_STRING"
    assert body["metadata"]["export_info"]["weights"] == "untrained"


def test_metadata_by_label_and_classify_method_names(api):
    assert get(api, "/v1/models/tiny/labels/canary/metadata")[1]["model_spec"]["version"] == "2"
    signatures = get(api, "/v1/models/half_plus_two/metadata")[1]["metadata"]["signature_def"]["signature_def"]
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    assert signatures["regress_x_to_y"]["inputs"]["inputs"]["name"] == "tf_example:0"


# -- predict ----------------------------------------------------------------------------------------

def test_predict_row_latest_version_label_agree(api, repository, images):
    latest = predict(api, "/v1/models/tiny:predict", images)
    v1 = predict(api, "/v1/models/tiny/versions/1:predict", images)
    v2 = predict(api, "/v1/models/tiny/versions/2:predict", images)
    stable = predict(api, "/v1/models/tiny/labels/stable:predict", images)
    assert latest.shape == (2, 10)
    np.testing.assert_allclose(latest.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(latest, v2)
    np.testing.assert_allclose(stable, v1)
    assert not np.allclose(v1, v2)
    # each answer gave its version back
    assert repository.in_flight() == 0


def test_predict_answers_what_the_servable_computes(api, repository, images):
    """The handler adds nothing: its numbers are the servable's own output for the same tensors."""
    with repository.acquire("tiny", 1) as held:
        direct = held.servable.run("serving_default", {"image": images})
    [output] = direct.values()
    np.testing.assert_allclose(predict(api, "/v1/models/tiny/versions/1:predict", images), output, rtol=1e-6)


def test_predict_columnar(api, images):
    status, body, _ = post(api, "/v1/models/tiny:predict", {"inputs": {"image": images.tolist()}})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"]), predict(api, "/v1/models/tiny:predict", images))


def test_predict_b64_bytes_signature_matches_float_signature(api, images):
    rows = [{"b64": base64.b64encode(image.astype("<f4").tobytes()).decode()} for image in images]
    status, body, _ = post(api, "/v1/models/tiny:predict", {"signature_name": "serving_bytes", "instances": rows})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), predict(api, "/v1/models/tiny:predict", images),
                               rtol=1e-5)


def test_predict_tf1_model(api):
    status, body, response = post(api, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (status, body) == (200, {"predictions": [2.5, 3.0, 4.5]})
    assert (response.api, response.version, response.status_code) == ("predict", "1", "OK")


# -- classify and regress ---------------------------------------------------------------------------

def test_regress(api):
    status, body, _ = post(api, "/v1/models/half_plus_two:regress",
                           {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]})
    assert (status, body) == (200, {"results": [2.5, 3.5]})


def test_classify_with_context(api):
    status, body, _ = post(api, "/v1/models/half_plus_two/versions/1:classify",
                           {"signature_name": "classify_x_to_y", "context": {"x": 2.0}, "examples": [{}, {}]})
    assert status == 200, body
    results = body["results"]
    assert len(results) == 2
    assert [label for label, _ in results[0]] == ["low", "high"]
    assert results[0][1][1] == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)


def test_classify_on_a_predict_signature_is_rejected(api):
    assert_error(post(api, "/v1/models/half_plus_two:classify", {"examples": [{"x": 1.0}]}), 400,
                 "No classification inputs found in SignatureDef")


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, status, fragment", [
    ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/tiny/versions/7:predict", 404, "Servable not found for request: Specific(tiny, 7)"),
    ("/v1/models/tiny/labels/beta:predict", 400, "Unrecognized servable version label: beta"),
    ("/v1/models/tiny/versions/1/labels/stable:predict", 400, "Malformed request: POST"),
    ("/v1/models/tiny:explode", 400, "Malformed request: POST /v1/models/tiny:explode"),
])
def test_lookup_and_url_errors(api, images, path, status, fragment):
    assert_error(post(api, path, {"instances": images.tolist()}), status, fragment)


@pytest.mark.parametrize("path, status, fragment", [
    ("/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("/v1/models/tiny/versions/9", 404, "Could not find version 9 of model tiny"),
    ("/v1/models/tiny/versions/abc", 400, "Malformed request: GET /v1/models/tiny/versions/abc"),
    ("/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models", 400, "Missing model name in request."),
])
def test_get_errors(api, path, status, fragment):
    assert_error(get(api, path), status, fragment)


def test_error_carries_its_canonical_code_for_the_metrics(api):
    assert post(api, "/v1/models/tiny/versions/7:predict", {"instances": [1]})[2].status_code == "NOT_FOUND"


@pytest.mark.parametrize("payload, fragment", [
    ({"signature_name": "nope", "instances": [1]}, 'Serving signature name: "nope" not found in signature def'),
    ({"instances": [[1.0]], "inputs": {"image": [[1.0]]}}, "expecting only one of 'inputs' or 'instances'"),
    ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [[[1.0, 2.0]]]}, "must be 4-dimensional like the signature's [-1,32,32,3], got [1,1,2]"),
    ({"instances": [[[["a", "b", "c"]]]]}, "JSON Value: \"a\" Type: String is not of expected type: float"),
])
def test_body_errors(api, payload, fragment):
    assert_error(post(api, "/v1/models/tiny:predict", payload), 400, fragment)


def test_malformed_json(api):
    assert_error(post(api, "/v1/models/tiny:predict", data=b'{"instances": [1,'), 400, "JSON Parse error")


def test_slow_predict_hits_the_deadline_and_releases_the_version(repository, submit):
    hurried = RestApi(repository, submit, timeout_s=0.2)
    assert_error(post(hurried, "/v1/models/slow:predict", {"instances": [0.8]}), 504, "Deadline Exceeded")
    assert repository.in_flight() == 0
    # the same call within its deadline succeeds: the 504 was the deadline, not the model
    patient = RestApi(repository, submit, timeout_s=10)
    status, body, _ = post(patient, "/v1/models/slow:predict", {"instances": [0.1]})
    assert (status, body) == (200, {"predictions": [pytest.approx(0.1)]})


# -- through a real process: what needs HTTP, a log or signals ----------------------------------

@pytest.fixture(scope="module")
def server(model_paths, tmp_path_factory, model_server_factory):
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(model_config_text(model_paths, extra={
        "tiny": 'model_version_policy { specific { versions: 1 versions: 2 } }\n'
                '    version_labels { key: "stable" value: 1 }\n    version_labels { key: "canary" value: 2 }'}))
    args = [f"--model_config_file={config}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}", "--rest_api_host=127.0.0.1"]
    with model_server_factory(extra_args=args, wait_for="tiny") as process:
        yield process


@pytest.fixture(scope="module")
def session(server):
    with requests.Session() as http_session:
        yield http_session


@pytest.mark.e2e
def test_served_over_http_with_json_errors_everywhere(session, server):
    ok = session.get(server.url + "/v1/models/tiny", timeout=10)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    missing = session.get(server.url + "/elsewhere", timeout=10)
    assert missing.status_code == 404 and "Not found" in missing.json()["error"]


@pytest.mark.e2e
def test_oversized_body_rejected_without_reading_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        reply = sock.makefile("rb").read().decode()  # to EOF: headers and body are separate writes
    assert reply.startswith("HTTP/1.1 400") and "exceeds the limit" in reply


@pytest.mark.e2e
def test_keep_alive_serves_many_requests_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.connect()
    local_port = connection.sock.getsockname()[1]
    for _ in range(3):
        connection.request("GET", "/v1/models/tiny")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length")
        response.read()
        assert connection.sock.getsockname()[1] == local_port
    connection.close()


@pytest.mark.e2e
def test_request_id_is_logged(session, server):
    session.get(server.url + "/v1/models/tiny", headers={"X-Request-ID": "req-abc-123"})
    deadline = time.monotonic() + 5
    while "request_id=req-abc-123" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "request_id=req-abc-123" in server.log()


def _metric(page: str, name: str, **labels) -> float:
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.e2e
def test_monitoring_counts_move(session, server, images):
    metrics_url = server.url + "/monitoring/prometheus/metrics"
    name = ":tensorflow:serving:request_count_total"
    before = session.get(metrics_url).text
    response = session.post(server.url + "/v1/models/tiny/versions/1:predict", json={"instances": images.tolist()})
    assert response.status_code == 200, response.text
    session.post(server.url + "/v1/models/tiny/versions/7:predict", json={"instances": [1]})
    after = session.get(metrics_url)
    assert after.status_code == 200 and after.headers["Content-Type"].startswith("text/plain")
    ok = dict(model_name="tiny", version="1", API="predict", status="OK")
    assert _metric(after.text, name, **ok) == _metric(before, name, **ok) + 1
    assert _metric(after.text, name, model_name="tiny", status="NOT_FOUND") == \
        _metric(before, name, model_name="tiny", status="NOT_FOUND") + 1
    assert _metric(after.text, ":tensorflow:serving:request_latency_count", model_name="tiny", version="1") > 0


# -- graceful shutdown (stops the server: keep last) ---------------------------------------------

@pytest.mark.e2e
def test_sigterm_lets_the_in_flight_request_finish(server):
    result = {}

    def call():
        result["response"] = requests.post(server.url + "/v1/models/slow:predict", json={"instances": [1.2]},
                                           timeout=30)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.4)
    assert server.stop(signal.SIGTERM, timeout=20) == 0
    caller.join(10)
    assert result["response"].status_code == 200
    assert result["response"].json() == {"predictions": [pytest.approx(1.2)]}
    assert re.search(r"Received SIGTERM", server.log())
