"""The v2 API end to end with a client nobody here wrote: ``tritonclient.http.InferenceServerClient``.

One real ``python -m model_server`` process on 127.0.0.1 serves TF Serving's own ``half_plus_two``
(read in place; its tests skip when it is absent), the tiny classifier (versions 1 and 2), a copy of
it whose export carries labels, and the spec's example model. Expected values are computed here
(0.5 * x + 2, numpy top-k) or read through the /v1 API, never copied from a previous run.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import requests

from serving_contract.export import read_export_info, write_export_info
from serving_contract.labels import labels_to_info
from tests.model_server.conftest import TFS_TESTDATA, TINY_INPUT, model_config_text, tfs_model
from tests.support.processes import free_port

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in requirements.txt")
from tritonclient.utils import InferenceServerException  # noqa: E402 (after the skip)

pytestmark = pytest.mark.timeout(240)

LABELS = [f"label-{i}" for i in range(10)]
HALF_PLUS_TWO_INPUT = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def server(model_paths, spec_example_path, tmp_path_factory, model_server_factory):
    root = tmp_path_factory.mktemp("v2_models")
    shutil.copytree(model_paths["tiny"] / "1", root / "labelled" / "1")
    labelled = root / "labelled" / "1"
    write_export_info(labelled, {**read_export_info(labelled),
                                 "labels": labels_to_info([(f"w{i}", label) for i, label in enumerate(LABELS)])})
    models = {"tiny": model_paths["tiny"], "labelled": root / "labelled", "spec_example": spec_example_path}
    if (TFS_TESTDATA / "half_plus_two").is_dir():
        models["half_plus_two"] = TFS_TESTDATA / "half_plus_two"
    config = root / "models.config"
    config.write_text(model_config_text(models, extra={
        "tiny": "model_version_policy { specific { versions: 1 versions: 2 } }"}))
    grpc_port = free_port()
    with model_server_factory(extra_args=[f"--model_config_file={config}", "--rest_api_host=127.0.0.1",
                                          f"--port={grpc_port}"], wait_for="tiny") as process:
        process.grpc_port = grpc_port
        yield process


@pytest.fixture(scope="module")
def client(server):
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield triton
    triton.close()


def infer_input(name, array, datatype, binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "3")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "model_server"
    assert set(metadata["extensions"]) >= {"binary_tensor_data", "classification"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_half_plus_two(client, binary):
    tfs_model("half_plus_two")
    outputs = [httpclient.InferRequestedOutput("y", binary_data=binary)]
    result = client.infer("half_plus_two", [infer_input("x", HALF_PLUS_TWO_INPUT, "FP32", binary)],
                          outputs=outputs, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("y").ravel(), 0.5 * HALF_PLUS_TWO_INPUT.ravel() + 2)
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "123"
    assert ("data" in response["outputs"][0]) is not binary


def test_half_plus_two_flat_input_as_in_the_issue(client):
    tfs_model("half_plus_two")
    x = infer_input("x", HALF_PLUS_TWO_INPUT.ravel(), "FP32")  # shape [3], as TF Serving's docs send it
    result = client.infer("half_plus_two", [x])
    np.testing.assert_allclose(result.as_numpy("y").ravel(), [2.5, 3.0, 4.5])


def test_half_plus_two_metadata(client):
    tfs_model("half_plus_two")
    metadata = client.get_model_metadata("half_plus_two")
    assert metadata == {"name": "half_plus_two", "versions": ["123"], "platform": "tensorflow_savedmodel",
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}


def test_half_plus_two_classification(client):
    tfs_model("half_plus_two")
    # y is [3, 1]: one class per row, so each row's best is index 0 with its own value.
    result = client.infer("half_plus_two", [infer_input("x", HALF_PLUS_TWO_INPUT, "FP32")],
                          outputs=[httpclient.InferRequestedOutput("y", class_count=1)])
    texts = [t.decode().split(":") for t in result.as_numpy("y").ravel()]
    assert [index for _, index in texts] == ["0", "0", "0"]
    np.testing.assert_array_equal([np.float32(value) for value, _ in texts], 0.5 * HALF_PLUS_TWO_INPUT.ravel() + 2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).random((3, *TINY_INPUT, 3), dtype=np.float32)


@pytest.mark.parametrize("version", ["1", "2"])
def test_versions_match_the_v1_api(client, server, images, version):
    metadata = client.get_model_metadata("tiny", version)
    (output,) = metadata["outputs"]
    result = client.infer("tiny", [infer_input("image", images, "FP32")], model_version=version)
    assert result.get_response()["model_version"] == version
    v1 = requests.post(f"{server.url}/v1/models/tiny/versions/{version}:predict",
                       json={"instances": images.tolist()}, timeout=30).json()["predictions"]
    np.testing.assert_allclose(result.as_numpy(output["name"]), v1, rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_with_export_labels(client, images, binary):
    (output,) = client.get_model_metadata("labelled")["outputs"]
    scores = client.infer("labelled", [infer_input("image", images, "FP32", binary)]).as_numpy(output["name"])
    result = client.infer("labelled", [infer_input("image", images, "FP32", binary)],
                          outputs=[httpclient.InferRequestedOutput(output["name"], binary_data=binary, class_count=5)])
    top = result.as_numpy(output["name"])
    assert top.shape == (3, 5)
    for row_scores, row in zip(scores, top):
        best = np.argsort(-row_scores, kind="stable")[:5]
        texts = [t.decode() if isinstance(t, bytes) else t for t in row]
        assert [t.split(":", 1)[1] for t in texts] == [f"{i}:{LABELS[i]}" for i in best]


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_spec_example_with_binary_inputs(client, compression):
    input0, input1 = np.array([[1, 2], [3, 4]], dtype=np.uint32), np.array([True, False, True])
    result = client.infer("spec_example", [infer_input("input0", input0, "UINT32"),
                                           infer_input("input1", input1, "BOOL")],
                          request_compression_algorithm=compression)
    column = input1.astype(np.float32) * input0.sum()
    np.testing.assert_array_equal(result.as_numpy("output0"), np.stack([column, column + 0.5], axis=1))


@pytest.mark.parametrize("call, status, message", [
    (lambda c: c.get_model_metadata("nope"), "404", "Servable not found for request: Latest(nope)"),
    (lambda c: c.infer("nope", [infer_input("x", HALF_PLUS_TWO_INPUT, "FP32")]), "404", "Latest(nope)"),
    (lambda c: c.infer("tiny", [infer_input("image", np.zeros((1, 2), np.float64), "FP64")]), "400",
     "Input 'image' of signature 'serving_default' is FP32, got FP64"),
    (lambda c: c.infer("tiny", [infer_input("image", np.zeros((1, *TINY_INPUT, 3), np.float32), "FP32")],
                       parameters={"signature_name": "nope"}), "400", 'signature name: "nope" not found'),
])
def test_errors_reach_the_client(client, call, status, message):
    with pytest.raises(InferenceServerException) as caught:
        call(client)
    assert caught.value.status() == status and message in caught.value.message()


def test_grpc_port_serves_the_v2_grpc_service(server):
    """The same server's gRPC port (--port) also answers inference.GRPCInferenceService."""
    tfs_model("half_plus_two")
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as triton:
        assert triton.is_server_live() and triton.is_model_ready("half_plus_two")
        x = grpcclient.InferInput("x", [3, 1], "FP32")
        x.set_data_from_numpy(HALF_PLUS_TWO_INPUT)
        result = triton.infer("half_plus_two", [x], outputs=[grpcclient.InferRequestedOutput("y", class_count=1)])
        texts = [t.decode().split(":") for t in result.as_numpy("y").ravel()]
        np.testing.assert_array_equal([np.float32(v) for v, _ in texts], 0.5 * HALF_PLUS_TWO_INPUT.ravel() + 2)
        y = triton.infer("half_plus_two", [x]).as_numpy("y")
        np.testing.assert_allclose(y.ravel(), 0.5 * HALF_PLUS_TWO_INPUT.ravel() + 2)
