"""The v2 gRPC service (``inference.GRPCInferenceService``) with tritonclient's gRPC client.

A real ``grpc.server`` on 127.0.0.1 (ephemeral port) in this process serves ``V2GrpcService`` over
real loaded SavedModels (``v2_repository``); tritonclient.grpc and the raw stub call it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is needed for the gRPC service")
triton_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient ships the v2 gRPC protos")

from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402 (after the skips)
from tritonclient.utils import InferenceServerException  # noqa: E402

from model_server import v2_grpc  # noqa: E402
from model_server.v2_api import V2DataPlane  # noqa: E402
from tests.model_server.conftest import TINY_INPUT, TINY_LABELS  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def address(v2_repository):
    pool = ThreadPoolExecutor(2)

    def submit(handle, signature, tensors):
        return pool.submit(partial(handle.servable.run, signature), tensors)

    server = grpc.server(ThreadPoolExecutor(4))
    v2_grpc.add_to_server(server, V2DataPlane(v2_repository, submit))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)
    pool.shutdown()


@pytest.fixture(scope="module")
def client(address):
    triton = triton_grpc.InferenceServerClient(address)
    yield triton
    triton.close()


def infer_input(name, array, datatype):
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert not client.is_server_ready()  # "loading" has no AVAILABLE version yet
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "2")
    assert not client.is_model_ready("loading") and not client.is_model_ready("nope")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "model_server" and "classification" in metadata["extensions"]
    model = client.get_model_metadata("spec_example", as_json=True)
    assert model["platform"] == "tensorflow_savedmodel" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input0", "datatype": "UINT32", "shape": ["2", "2"]},
                               {"name": "input1", "datatype": "BOOL", "shape": ["3"]}]


def test_infer_raw_contents(client):
    input0, input1 = np.array([[1, 2], [3, 4]], dtype=np.uint32), np.array([True, False, True])
    result = client.infer("spec_example", [infer_input("input0", input0, "UINT32"),
                                           infer_input("input1", input1, "BOOL")], request_id="g-1")
    column = input1.astype(np.float32) * input0.sum()
    np.testing.assert_array_equal(result.as_numpy("output0"), np.stack([column, column + 0.5], axis=1))
    response = result.get_response()
    assert (response.id, response.model_version) == ("g-1", "1")


def test_infer_typed_contents_and_version(address):
    request = service_pb2.ModelInferRequest(model_name="spec_example", model_version="1")
    request.inputs.add(name="input0", datatype="UINT32", shape=[2, 2]).contents.uint_contents.extend([1, 2, 3, 4])
    request.inputs.add(name="input1", datatype="BOOL", shape=[3]).contents.bool_contents.extend([True, True, False])
    with grpc.insecure_channel(address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output0", "FP32", [3, 2])
    values = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 2)
    np.testing.assert_array_equal(values, [[10, 10.5], [10, 10.5], [0, 0.5]])


def test_classification_with_export_labels(client):
    images = np.random.default_rng(9).random((2, *TINY_INPUT, 3), dtype=np.float32)
    (output,) = client.get_model_metadata("labelled", as_json=True)["outputs"]
    scores = client.infer("labelled", [infer_input("image", images, "FP32")]).as_numpy(output["name"])
    top = client.infer("labelled", [infer_input("image", images, "FP32")],
                       outputs=[triton_grpc.InferRequestedOutput(output["name"], class_count=3)]).as_numpy(output["name"])
    assert top.shape == (2, 3)
    for row_scores, row in zip(scores, top):
        best = np.argsort(-row_scores, kind="stable")[:3]
        assert [t.decode().split(":", 1)[1] for t in row] == [f"{i}:{TINY_LABELS[i]}" for i in best]


@pytest.mark.parametrize("call, code, message", [
    (lambda c: c.get_model_metadata("nope"), "StatusCode.NOT_FOUND", "Servable not found for request: Latest(nope)"),
    (lambda c: c.infer("tiny", [infer_input("image", np.zeros((1, 2), np.float64), "FP64")]),
     "StatusCode.INVALID_ARGUMENT", "Input 'image' of signature 'serving_default' is FP32, got FP64"),
    (lambda c: c.infer("tiny", [infer_input("image", np.zeros((1, 2), np.float32), "FP32")], model_version="x"),
     "StatusCode.INVALID_ARGUMENT", "Model version must be a non-negative integer"),
])
def test_errors_carry_the_canonical_code(client, call, code, message):
    with pytest.raises(InferenceServerException) as caught:
        call(client)
    assert caught.value.status() == code and message in caught.value.message()
