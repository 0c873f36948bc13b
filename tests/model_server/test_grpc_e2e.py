"""TF Serving's gRPC API against a running ``python -m model_server``, with the official client stubs.

Every call goes through ``tensorflow_serving.apis``' ``PredictionServiceStub`` / ``ModelServiceStub``
and ``tf.make_tensor_proto`` / ``tf.make_ndarray``, as TF Serving's own clients do. Expected values
come from the models' formulas (half_plus_two: y = x / 2 + 2) or from the same server's REST API,
which tests/model_server/test_rest_e2e.py checks against the models themselves.

One server serves the test models over TCP and a UNIX socket, with a 1 MiB receive limit; the
reload and SIGTERM tests come last because they change it. A second server watches a base path
for the hot swap.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
apis = pytest.importorskip("tensorflow_serving.apis", reason="needs tensorflow-serving-api (make venv installs it)")

from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from google.protobuf import wrappers_pb2  # noqa: E402
from tensorflow.core.framework.tensor_pb2 import TensorProto  # noqa: E402

from tests.model_server.conftest import TINY_INPUT, model_config_text  # noqa: E402
from tests.support.processes import REPO_ROOT, free_port  # noqa: E402
from tests.support.tiny_models import export_tiny_classifier  # noqa: E402

pytestmark = [pytest.mark.timeout(240), pytest.mark.e2e]

TFS_TESTDATA = REPO_ROOT.parent / "shared" / "tfs_testdata"
MAX_RECEIVE_BYTES = 1 << 20
SLOW_DEADLINE_S = 1.0
SWAP_BUDGET_S = 15.0
RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, (2, *TINY_INPUT, 3), dtype=np.uint8)


# -- servers and stubs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(model_paths) -> dict[str, Path]:
    served = {"tiny": model_paths["tiny"], "half_plus_two": model_paths["half_plus_two"],
              "slow": model_paths["slow"]}
    if (TFS_TESTDATA / "half_plus_two").is_dir():
        served["tfs_half_plus_two"] = TFS_TESTDATA / "half_plus_two"
    return served


@pytest.fixture(scope="module")
def server(models, tmp_path_factory, model_server_factory):
    folder = tmp_path_factory.mktemp("grpc")
    config = folder / "models.config"
    config.write_text(model_config_text(models, {"tiny": "model_version_policy { all {} }\n"
                                                         "    version_labels { key: 'stable' value: 1 }"}))
    grpc_port, socket_path = free_port(), folder / "grpc.sock"
    args = [f"--port={grpc_port}", f"--grpc_socket_path={socket_path}", f"--model_config_file={config}",
            f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_RECEIVE_BYTES}",
            "--grpc_max_threads=8", "--max_num_load_retries=0"]
    with model_server_factory(extra_args=args, wait_for="slow") as process:
        for name in models:
            _wait_rest_available(process, name)
        process.extra.update(grpc_address=f"127.0.0.1:{grpc_port}", socket_path=socket_path, config=config)
        yield process


def _wait_rest_available(process, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(f"{process.url}/v1/models/{name}", timeout=5)
        if response.ok and any(s["state"] == "AVAILABLE" for s in response.json()["model_version_status"]):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never AVAILABLE:\n{process.log()[-3000:]}")


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.extra["grpc_address"]) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_service(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model: str, inputs: dict, signature: str = "", version: int | None = None,
                    label: str | None = None, output_filter: tuple[str, ...] = ()) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, TensorProto)
                                       else tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def examples(*values: float) -> list[tf.train.Example]:
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[v]))})) for v in values]


def rest_predict(server, model: str, body: dict, version: int | None = None) -> np.ndarray:
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], dtype=np.float32)


def assert_rpc_error(call, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()


# -- PredictionService.Predict ---------------------------------------------------------------------

def test_predict_on_tf_servings_half_plus_two(prediction, models):
    if "tfs_half_plus_two" not in models:
        pytest.skip(f"TF Serving's test models are not at {TFS_TESTDATA}")
    request = predict_request("tfs_half_plus_two", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})
    response = prediction.Predict(request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]).ravel(), [2.5, 3.0, 4.5])
    assert response.model_spec.name == "tfs_half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_tf_serving_docs_client_with_flat_instances(prediction, models):
    """The documentation's client: x = [1.0, 2.0, 5.0] (shape [3]) -> y = [2.5, 3.0, 4.5]."""
    if "tfs_half_plus_two" not in models:
        pytest.skip(f"TF Serving's test models are not at {TFS_TESTDATA}")
    request = predict_request("tfs_half_plus_two", {"x": np.array([1.0, 2.0, 5.0], np.float32)})
    response = prediction.Predict(request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [2.5, 3.0, 4.5])


def test_predict_on_the_exported_half_plus_two(prediction):
    x = np.array([1.0, 2.0, 5.0, -4.0], np.float32)
    response = prediction.Predict(predict_request("half_plus_two", {"x": x}), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), x / 2 + 2)


def test_predict_on_the_image_classifier_matches_rest(server, prediction):
    """Each signature of the exported classifier gives over gRPC what it gives over REST."""
    import base64

    raw = [image.tobytes() for image in PIXELS]
    by_grpc = prediction.Predict(predict_request("tiny", {"pixels_bytes": np.array(raw, dtype=object)},
                                                 "serving_uint8"), timeout=30)
    scores = tf.make_ndarray(by_grpc.outputs["probabilities"])
    by_rest = rest_predict(server, "tiny", {"signature_name": "serving_uint8", "instances": [
        {"pixels_bytes": {"b64": base64.b64encode(image).decode()}} for image in raw]})
    assert scores.shape == (2, by_rest.shape[1])
    np.testing.assert_allclose(scores, by_rest, atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)

    scaled = PIXELS.astype(np.float32) / 127.5 - 1
    by_grpc_float = prediction.Predict(predict_request("tiny", {"image": scaled}), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(by_grpc_float.outputs["probabilities"]), scores, atol=1e-5)


def test_output_filter_and_versions_and_labels(prediction):
    image = {"image": (PIXELS[:1].astype(np.float32) / 127.5 - 1)}
    latest = prediction.Predict(predict_request("tiny", image, output_filter=("probabilities",)), timeout=30)
    assert list(latest.outputs) == ["probabilities"] and latest.model_spec.version.value == 2
    first = prediction.Predict(predict_request("tiny", image, version=1), timeout=30)
    stable = prediction.Predict(predict_request("tiny", image, label="stable"), timeout=30)
    assert first.model_spec.version.value == stable.model_spec.version.value == 1
    np.testing.assert_array_equal(tf.make_ndarray(first.outputs["probabilities"]),
                                  tf.make_ndarray(stable.outputs["probabilities"]))
    assert not np.allclose(tf.make_ndarray(first.outputs["probabilities"]),
                           tf.make_ndarray(latest.outputs["probabilities"]))


def test_unix_socket_serves_the_same_api(server):
    with grpc.insecure_channel(f"unix:{server.extra['socket_path']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request("half_plus_two", {"x": np.array([4.0], np.float32)}), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [4.0])


# -- Classify, Regress, MultiInference -------------------------------------------------------------

def test_regress_with_tf_examples(prediction):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    request.input.example_list.examples.extend(examples(1.0, 3.0))
    response = prediction.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == pytest.approx([2.5, 3.5])
    assert response.model_spec.signature_name == "regress_x_to_y" and response.model_spec.version.value == 1


def test_classify_with_context(prediction):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(examples(10.0)[0])
    listed.examples.extend([examples(-4.0)[0], tf.train.Example()])  # the second takes x from the context
    response = prediction.Classify(request, timeout=30)
    y = np.array([0.0, 7.0])  # -4 / 2 + 2, 10 / 2 + 2
    high = 1 / (1 + np.exp(-y))
    for classifications, score in zip(response.result.classifications, high):
        assert [c.label for c in classifications.classes] == ["low", "high"]
        assert [c.score for c in classifications.classes] == pytest.approx([1 - score, score], abs=1e-6)


def test_multi_inference_runs_classify_and_regress(prediction):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
    request.input.example_list.examples.extend(examples(2.0))
    response = prediction.MultiInference(request, timeout=30)
    classification, regression = response.results
    assert [c.label for c in classification.classification_result.classifications[0].classes] == ["low", "high"]
    assert regression.regression_result.regressions[0].value == pytest.approx(3.0)
    assert regression.model_spec.signature_name == "regress_x_to_y"


# -- metadata and status ---------------------------------------------------------------------------

def test_metadata_carries_the_signature_defs(server, prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = prediction.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    rest = requests.get(server.url + "/v1/models/tiny/metadata", timeout=10).json()
    assert set(signatures.signature_def) == set(rest["metadata"]["signature_def"]["signature_def"])
    uint8 = signatures.signature_def["serving_uint8"]
    assert uint8.method_name == "tensorflow/serving/predict"
    assert uint8.inputs["pixels_bytes"].dtype == tf.string.as_datatype_enum
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 2
    # our extension: the export's export_info, as the REST metadata carries it
    request.metadata_field[:] = ["export_info"]
    info = wrappers_pb2.StringValue()
    assert prediction.GetModelMetadata(request, timeout=30).metadata["export_info"].Unpack(info)
    assert json.loads(info.value) == rest["metadata"]["export_info"]


def test_model_status_lists_versions(model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    states = {s.version: s.state for s in model_service.GetModelStatus(request, timeout=10).model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {2: available, 1: available}
    request.model_spec.version.value = 1
    (only,) = model_service.GetModelStatus(request, timeout=10).model_version_status
    assert only.version == 1 and only.status.error_code == 0


def test_grpc_requests_are_counted_in_the_metrics(server, prediction):
    def count(page: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                   if line.startswith(":tensorflow:serving:request_count_total{")
                   and 'model_name="half_plus_two"' in line and 'API="Predict"' in line
                   and 'entrypoint="GRPC"' in line and 'status="OK"' in line)

    url = server.url + "/monitoring/prometheus/metrics"
    before = count(requests.get(url, timeout=10).text)
    prediction.Predict(predict_request("half_plus_two", {"x": np.array([1.0], np.float32)}), timeout=30)
    page = requests.get(url, timeout=10).text
    assert count(page) == before + 1
    assert any(line.startswith(":tensorflow:serving:request_latency_count{") and 'entrypoint="GRPC"' in line
               and 'model_name="half_plus_two"' in line for line in page.splitlines())


# -- errors: the codes and messages of TF Serving ---------------------------------------------------

def _bad_tensor():
    proto = tf.make_tensor_proto(np.zeros(3, np.float32))
    proto.tensor_content = proto.tensor_content[:5]  # 5 bytes cannot be 3 float32s
    return proto


X = {"x": np.array([1.0], np.float32)}
PREDICT_ERRORS = [
    ("missing model spec", predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ("unknown model", predict_request("nope", X), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", predict_request("half_plus_two", X, version=7), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(half_plus_two, 7)"),
    ("unknown label", predict_request("tiny", X, label="canary"), grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: canary"),
    ("unknown signature", predict_request("half_plus_two", X, "nope"), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("missing input", predict_request("half_plus_two", {}), grpc.StatusCode.INVALID_ARGUMENT,
     "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}."),
    ("extra input", predict_request("half_plus_two", {**X, "z": np.ones(1)}), grpc.StatusCode.INVALID_ARGUMENT,
     "input size does not match signature: 2!=1"),
    ("wrong alias", predict_request("half_plus_two", {"z": np.ones(1, np.float32)}),
     grpc.StatusCode.INVALID_ARGUMENT, "input tensor alias not found in signature: z. Inputs expected to be in "
                                       "the set {x}."),
    ("unparsable tensor", predict_request("half_plus_two", {"x": _bad_tensor()}), grpc.StatusCode.INVALID_ARGUMENT,
     "tensor parsing error: x"),
    ("wrong dtype", predict_request("half_plus_two", {"x": np.array(["a"], dtype=object)}),
     grpc.StatusCode.INVALID_ARGUMENT, ""),
    ("unknown output", predict_request("half_plus_two", X, output_filter=("q",)), grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: q Outputs expected to be in the set {y}."),
    ("duplicate output", predict_request("half_plus_two", X, output_filter=("y", "y")),
     grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: y"),
]


@pytest.mark.parametrize("request_, code, message", [case[1:] for case in PREDICT_ERRORS],
                         ids=[case[0] for case in PREDICT_ERRORS])
def test_predict_errors(prediction, request_, code, message):
    assert_rpc_error(lambda: prediction.Predict(request_, timeout=30), code, message)


def test_example_errors(prediction):
    empty = regression_pb2.RegressionRequest()
    empty.model_spec.name, empty.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    assert_rpc_error(lambda: prediction.Regress(empty, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                     "Input is empty.")
    wrong = classification_pb2.ClassificationRequest()
    wrong.model_spec.name = "half_plus_two"  # serving_default takes a float x, not Examples
    wrong.input.example_list.examples.extend(examples(1.0))
    assert_rpc_error(lambda: prediction.Classify(wrong, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                     "No classification inputs found in SignatureDef")
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/predict")
    task.model_spec.name = "half_plus_two"
    multi.input.example_list.examples.extend(examples(1.0))
    assert_rpc_error(lambda: prediction.MultiInference(multi, timeout=30), grpc.StatusCode.UNIMPLEMENTED,
                     "Unsupported signature method_name: tensorflow/serving/predict")


def test_metadata_and_status_errors(prediction, model_service):
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = "tiny"
    assert_rpc_error(lambda: prediction.GetModelMetadata(no_field, timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                     "GetModelMetadataRequest must specify at least one metadata_field")
    no_field.metadata_field.append("graph")
    assert_rpc_error(lambda: prediction.GetModelMetadata(no_field, timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                     "Metadata field graph is not supported")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    assert_rpc_error(lambda: model_service.GetModelStatus(status, timeout=10), grpc.StatusCode.NOT_FOUND,
                     "Could not find any versions of model nope")
    status.model_spec.name, status.model_spec.version.value = "tiny", 9
    assert_rpc_error(lambda: model_service.GetModelStatus(status, timeout=10), grpc.StatusCode.NOT_FOUND,
                     "Could not find version 9 of model tiny")


def test_client_deadline_is_enforced(prediction):
    request = predict_request("slow", {"seconds": np.array([SLOW_DEADLINE_S + 2], np.float32)})
    started = time.monotonic()
    assert_rpc_error(lambda: prediction.Predict(request, timeout=SLOW_DEADLINE_S),
                     grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert time.monotonic() - started < SLOW_DEADLINE_S + 2


def test_client_without_a_deadline_waits_for_the_answer(prediction):
    """No timeout (gRPC then reports ~9.2e18 s remaining): the call runs to its end, as in TF Serving."""
    seconds = np.array([0.3], np.float32)  # still running when the server starts waiting for it
    response = prediction.Predict(predict_request("slow", {"seconds": seconds}))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["seconds"]), seconds)


def test_request_over_the_receive_limit_is_refused(prediction):
    big = np.zeros(MAX_RECEIVE_BYTES // 4 + 1024, np.float32)  # just over 1 MiB of tensor_content
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(predict_request("half_plus_two", {"x": big}), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the server is still fine
    prediction.Predict(predict_request("half_plus_two", X), timeout=30)


# -- ModelService.HandleReloadConfigRequest and shutdown (they change the server: keep last) ------

def _reload(model_service, models: dict[str, Path]) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in models.items():
        request.config.model_config_list.config.add(name=name, base_path=str(path), model_platform="tensorflow")
    return model_service.HandleReloadConfigRequest(request, timeout=120)


def test_reload_config_errors(model_service):
    request = model_management_pb2.ReloadConfigRequest()
    request.config.custom_model_config.Pack(model_management_pb2.ReloadConfigResponse())
    assert_rpc_error(lambda: model_service.HandleReloadConfigRequest(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT, "Only ModelConfigList is currently supported")
    assert_rpc_error(lambda: _reload(model_service, {"rel": Path("relative/path")}),
                     grpc.StatusCode.INVALID_ARGUMENT, "Expected model rel to have an absolute path or URI; "
                                                       "got base_path()=relative/path")


def test_reload_config_with_a_model_that_cannot_load_fails(model_service, models, tmp_path):
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    assert_rpc_error(lambda: _reload(model_service, {**models, "broken": broken}), grpc.StatusCode.UNKNOWN,
                     "1 model(s) did not become available: {{{name: broken version: 1} due to error: DATA_LOSS")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "broken"
    (failed,) = model_service.GetModelStatus(status, timeout=10).model_version_status
    assert failed.state == get_model_status_pb2.ModelVersionStatus.END and failed.status.error_code != 0
    _reload(model_service, models)  # back to the module's models


def test_reload_config_adds_and_removes_models(prediction, model_service, models):
    response = _reload(model_service, {"half_plus_two": models["half_plus_two"], "copy": models["half_plus_two"],
                                       "slow": models["slow"]})
    assert response.status.error_code == 0
    answer = prediction.Predict(predict_request("copy", {"x": np.array([6.0], np.float32)}), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["y"]), [5.0])
    assert_rpc_error(lambda: prediction.Predict(predict_request("tiny", {"image": np.zeros((1, 2))}), timeout=30),
                     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(tiny)")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "tiny"
    assert {s.state for s in model_service.GetModelStatus(status, timeout=10).model_version_status} == {
        get_model_status_pb2.ModelVersionStatus.END}


def test_sigterm_lets_the_in_flight_call_finish(server, prediction):
    result: dict = {}

    def call():
        try:
            result["response"] = prediction.Predict(
                predict_request("slow", {"seconds": np.array([1.5], np.float32)}), timeout=30)
        except grpc.RpcError as exc:
            result["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    caller.join(10)
    assert "error" not in result, result.get("error")
    np.testing.assert_allclose(tf.make_ndarray(result["response"].outputs["seconds"]), [1.5])


# -- hot swap under concurrent gRPC clients --------------------------------------------------------

@pytest.fixture(scope="module")
def swap_server(tmp_path_factory, model_paths, model_server_factory):
    base_path = tmp_path_factory.mktemp("grpc-swap") / "tiny"
    shutil.copytree(model_paths["tiny"] / "1", base_path / "1")
    grpc_port = free_port()
    args = [f"--port={grpc_port}", "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"]
    with model_server_factory(model_name="tiny", model_base_path=base_path, extra_args=args) as process:
        process.extra.update(grpc_address=f"127.0.0.1:{grpc_port}", base_path=base_path)
        yield process


def test_hot_swap_under_concurrent_grpc_clients_fails_no_call(swap_server, model_paths):
    failures, versions, stop = [], [], threading.Event()
    request = predict_request("tiny", {"image": PIXELS[:1].astype(np.float32) / 127.5 - 1})

    def client():
        with grpc.insecure_channel(swap_server.extra["grpc_address"]) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    versions.append(stub.Predict(request, timeout=30).model_spec.version.value)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(0.5)
        # Written beside, then renamed in: a poll never sees a half-copied version.
        staging = swap_server.extra["base_path"] / ".staging-2"
        shutil.copytree(model_paths["tiny"] / "2", staging)
        staging.rename(swap_server.extra["base_path"] / "2")
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "tiny"
        deadline = time.monotonic() + SWAP_BUDGET_S
        with grpc.insecure_channel(swap_server.extra["grpc_address"]) as channel:
            model_service = model_service_pb2_grpc.ModelServiceStub(channel)
            while time.monotonic() < deadline:
                states = {s.version: s.state for s in model_service.GetModelStatus(status, timeout=10)
                          .model_version_status}
                if states == {2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                              1: get_model_status_pb2.ModelVersionStatus.END}:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"swap not done: {states}\n{swap_server.log()[-3000:]}")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert failures == []
    assert 1 in versions and versions[-1] == 2
