"""The v2 API at handler level, without a socket, over real loaded SavedModels.

Like TF Serving's http_rest_api_handler_test.cc: ``V2Api.handle(method, path, body, headers)`` on
a repository holding real servables, submitted to a real thread pool. The worked examples of
inference_rest.md and Triton's binary data and classification documents are sent as written.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import orjson
import pytest

from model_server.rest_server import RestApi
from model_server.v2_api import V2Api, V2DataPlane, export_labels, server_version
from tests.model_server.conftest import TINY_INPUT, TINY_LABELS

pytestmark = pytest.mark.timeout(300)

# inference_rest.md, "Inference Request Examples", verbatim (its input1 gives 1 value for shape [3]).
SPEC_REQUEST = b"""{
  "id" : "42",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "data" : [ 1, 2, 3, 4 ]
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "data" : [ true ]
    }
  ],
  "outputs" : [
    {
      "name" : "output0"
    }
  ]
}"""
# extension_classification.md's request, plus the parameter that picks the signature computing its scores.
CLASSIFICATION_REQUEST = b"""{
  "id" : "42",
  "parameters" : { "signature_name" : "classify" },
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "data" : [ 1, 2, 3, 4 ]
    }
  ],
  "outputs" : [
    {
      "name" : "output0",
      "parameters" : { "classification" : 2 }
    }
  ]
}"""


@pytest.fixture(scope="module")
def apis(v2_repository):
    repository = v2_repository
    with ThreadPoolExecutor(2) as pool:
        def submit(handle, signature, tensors):
            return pool.submit(partial(handle.servable.run, signature), tensors)

        yield V2Api(V2DataPlane(repository, submit), 30.0), RestApi(repository, submit, 30.0)


@pytest.fixture(scope="module")
def api(apis):
    return apis[0]


def call(api, method, path, body=b"", headers=None):
    response = api.handle(method, path, body, headers or {})
    return response.http_status, response


def json_call(api, method, path, body=b""):
    status, response = call(api, method, path, body)
    assert response.content_type == "application/json"
    return status, orjson.loads(response.body)


def test_server_metadata_live_ready(api):
    assert json_call(api, "GET", "/v2") == (200, {"name": "model_server", "version": server_version(),
                                                  "extensions": ["binary_tensor_data", "classification"]})
    assert json_call(api, "GET", "/v2/health/live") == (200, {"live": True})
    # "loading" has no AVAILABLE version yet, so the server as a whole is not ready.
    assert json_call(api, "GET", "/v2/health/ready") == (503, {"ready": False})


def test_model_ready(api):
    assert json_call(api, "GET", "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    assert json_call(api, "GET", "/v2/models/tiny/versions/2/ready") == (200, {"name": "tiny", "ready": True})
    assert json_call(api, "GET", "/v2/models/loading/ready") == (503, {"name": "loading", "ready": False})
    status, body = json_call(api, "GET", "/v2/models/tiny/versions/9/ready")
    assert status == 404 and "Version 9 of model 'tiny'" in body["error"]
    status, body = json_call(api, "GET", "/v2/models/nope/ready")
    assert status == 404 and "'nope'" in body["error"]


def test_model_metadata(api):
    status, body = json_call(api, "GET", "/v2/models/spec_example")
    assert status == 200
    assert body == {"name": "spec_example", "versions": ["1"], "platform": "tensorflow_savedmodel",
                    "inputs": [{"name": "input0", "datatype": "UINT32", "shape": [2, 2]},
                               {"name": "input1", "datatype": "BOOL", "shape": [3]}],
                    "outputs": [{"name": "output0", "datatype": "FP32", "shape": [3, 2]}]}
    status, body = json_call(api, "GET", "/v2/models/tiny/versions/1")
    assert status == 200 and body["versions"] == ["1", "2"]
    assert {"name": "image", "datatype": "FP32", "shape": [-1, *TINY_INPUT, 3]} in body["inputs"]
    assert body["export_info"]["weights"] == "untrained"


@pytest.mark.parametrize("path, status, message", [
    ("/v2/models/nope", 404, "Servable not found for request: Latest(nope)"),
    ("/v2/models/tiny/versions/7", 404, "Servable not found for request: Specific(tiny, 7)"),
    ("/v2/models/loading", 404, "Latest(loading)"),
    ("/v2/nothing", 404, "Not found: GET /v2/nothing"),
])
def test_metadata_errors(api, path, status, message):
    got, body = json_call(api, "GET", path)
    assert got == status and message in body["error"]


def expected_output0(input0: np.ndarray, input1: np.ndarray) -> np.ndarray:
    column = input1.astype(np.float32) * np.float32(input0.astype(np.int64).sum())
    return np.stack([column, column + 0.5], axis=1)


def test_spec_example_as_written_is_rejected_and_corrected_it_runs(api):
    status, body = json_call(api, "POST", "/v2/models/spec_example/infer", SPEC_REQUEST)
    assert status == 400
    assert body["error"] == "Input 'input1' has shape [3] (3 elements) but its data holds 1 element(s)"
    corrected = SPEC_REQUEST.replace(b'"data" : [ true ]', b'"data" : [ true, false, true ]')
    status, body = json_call(api, "POST", "/v2/models/spec_example/infer", corrected)
    assert status == 200, body
    expected = expected_output0(np.array([[1, 2], [3, 4]]), np.array([True, False, True]))
    assert body == {"model_name": "spec_example", "model_version": "1", "id": "42",
                    "outputs": [{"name": "output0", "datatype": "FP32", "shape": [3, 2],
                                 "data": expected.ravel().tolist()}]}


def test_binary_data_extension_example(api):
    # extension_binary_data.md: 16 bytes of UINT32 [2, 2] and 3 bytes of BOOL [3] after the JSON;
    # output0 asked for as binary comes back as 24 bytes after the response JSON.
    header = orjson.dumps({"model_name": "mymodel", "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "parameters": {"binary_data_size": 16}},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}}]})
    input0, input1 = [5, 6, 7, 4_000_000_000], [False, True, True]
    body = header + struct.pack("<4I", *input0) + bytes(input1)
    status, response = call(api, "POST", "/v2/models/spec_example/infer", body,
                            {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, response.body
    assert response.content_type == "application/octet-stream"
    json_length = int(response.headers["Inference-Header-Content-Length"])
    reply = orjson.loads(response.body[:json_length])
    assert reply["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [3, 2],
                                 "parameters": {"binary_data_size": 24}}]
    data = np.frombuffer(response.body[json_length:], dtype="<f4").reshape(3, 2)
    np.testing.assert_array_equal(data, expected_output0(np.array(input0, np.uint32), np.array(input1)))


def test_classification_extension_example(api):
    status, body = json_call(api, "POST", "/v2/models/spec_example/infer", CLASSIFICATION_REQUEST)
    assert status == 200, body
    assert body["id"] == "42"
    # The document's answer: "3.3:1", "2.4:3" (it names the datatype STRING, Triton's old name for BYTES).
    assert body["outputs"] == [{"name": "output0", "datatype": "BYTES", "shape": [2], "data": ["3.3:1", "2.4:3"]}]


def tiny_request(images: np.ndarray, **extra) -> bytes:
    return orjson.dumps({"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32",
                                     "data": images.ravel().tolist()}], **extra})


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).random((2, *TINY_INPUT, 3), dtype=np.float32)


@pytest.mark.parametrize("version_path", ["", "/versions/1", "/versions/2"])
def test_same_versions_and_answers_as_v1(apis, images, version_path):
    v2, v1 = apis
    status, body = json_call(v2, "POST", f"/v2/models/tiny{version_path}/infer", tiny_request(images))
    assert status == 200, body
    reference = orjson.loads(v1.handle("POST", f"/v1/models/tiny{version_path}:predict",
                                       orjson.dumps({"instances": images.tolist()})).body)["predictions"]
    (output,) = body["outputs"]
    assert body["model_version"] == (version_path.rsplit("/", 1)[-1] or "2")
    np.testing.assert_allclose(np.array(output["data"]).reshape(output["shape"]), reference, rtol=1e-6)


def test_classification_uses_the_labels_inside_the_export(api, images):
    status, body = json_call(api, "POST", "/v2/models/labelled/infer", tiny_request(images))
    scores = np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(body["outputs"][0]["shape"])
    outputs = [{"name": body["outputs"][0]["name"], "parameters": {"classification": 3}}]
    status, body = json_call(api, "POST", "/v2/models/labelled/infer", tiny_request(images, outputs=outputs))
    assert status == 200, body
    (output,) = body["outputs"]
    assert output["shape"] == [2, 3] and output["datatype"] == "BYTES"
    for row, texts in zip(scores, np.array(output["data"]).reshape(2, 3)):
        best = np.argsort(-row, kind="stable")[:3]
        assert [t.split(":")[1:] for t in texts] == [[str(i), TINY_LABELS[i]] for i in best]
        np.testing.assert_allclose([float(t.split(":")[0]) for t in texts], row[best], rtol=1e-6)


def test_export_labels_come_from_the_export_contract():
    assert export_labels({"labels": [{"id": "n1", "label": "tench"}, {"id": "n2", "label": "goldfish"}]}) == [
        "tench", "goldfish"]
    assert export_labels({"weights": "untrained"}) is None and export_labels(None) is None
    assert export_labels({"labels": ["not", "pairs"]}) is None  # malformed: logged, classification without labels


@pytest.mark.parametrize("body, status, message", [
    (tiny_request(np.zeros((1, *TINY_INPUT, 3)), parameters={"signature_name": "nope"}), 400,
     'Serving signature name: "nope" not found'),
    (orjson.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "FP64", "data": [1]}]}), 400,
     "Input 'image' of signature 'serving_default' is FP32, got FP64"),
    (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), 400,
     "Unexpected input 'x' for signature 'serving_default'"),
    (orjson.dumps({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}), 400,
     "must be 4-dimensional like the signature's [-1,32,32,3]"),
    (tiny_request(np.zeros((1, *TINY_INPUT, 3)), outputs=[{"name": "logits"}]), 400,
     "Unexpected output 'logits' for signature 'serving_default'"),
    (b"{", 400, "not valid JSON"),
])
def test_infer_errors(api, body, status, message):
    got, reply = json_call(api, "POST", "/v2/models/tiny/infer", body)
    assert got == status and message in reply["error"]


def test_infer_on_unknown_model_or_version_is_404(api):
    body = tiny_request(np.zeros((1, *TINY_INPUT, 3)))
    for path in ("/v2/models/nope/infer", "/v2/models/tiny/versions/3/infer"):
        status, reply = json_call(api, "POST", path, body)
        assert status == 404 and "Servable not found" in reply["error"]
