"""Warm-up like TF Serving: assets.extra/tf_serving_warmup_requests replayed at load (in-process).

The tests write the warm-up files themselves, with the official PredictionLog protos
(tensorflow-serving-api), on a TF1 model with predict, classify and regress signatures.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_server.errors import DataLoss, InvalidArgument, Unimplemented
from model_server.servable import load_servable, run_warmup
from model_server.example_codec import examples_of_input
from model_server.warmup import MAX_WARMUP_RECORDS, predict_log, write_warmup_requests
from serving_contract.export import WARMUP_REQUESTS_PATH
from tests.model_server.conftest import export_half_plus_two

pytestmark = pytest.mark.timeout(120)


def example(**features: float):
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        key: tf.train.Feature(float_list=tf.train.FloatList(value=[value])) for key, value in features.items()}))


def example_log(kind: str, signature_name: str, xs=(1.0, 2.0)):
    from tensorflow_serving.apis import prediction_log_pb2

    prediction_log = prediction_log_pb2.PredictionLog()
    request = getattr(prediction_log, kind).request
    request.model_spec.signature_name = signature_name
    request.input.example_list.examples.extend(example(x=x) for x in xs)
    return prediction_log


def multi_inference_log():
    from tensorflow_serving.apis import prediction_log_pb2

    prediction_log = prediction_log_pb2.PredictionLog()
    request = prediction_log.multi_inference_log.request
    for signature_name, method in (("classify_x_to_y", "classify"), ("regress_x_to_y", "regress")):
        task = request.tasks.add()
        task.model_spec.signature_name = signature_name
        task.method_name = f"tensorflow/serving/{method}"
    request.input.example_list.examples.append(example(x=3.0))
    return prediction_log


@pytest.fixture
def version_dir(tmp_path):
    return export_half_plus_two(tmp_path / "1")


def load(version_dir, warm_up=True):
    return load_servable("hp2", 1, version_dir, warm_up=warm_up)


def test_every_kind_of_log_is_replayed_before_load_returns(version_dir):
    write_warmup_requests(version_dir, [
        predict_log("serving_default", {"x": np.array([1.0, 2.0], np.float32)}),
        example_log("classify_log", "classify_x_to_y"),
        example_log("regress_log", "regress_x_to_y"),
        multi_inference_log()])
    servable = load(version_dir)
    # each signature's Session callable was built (and run) by the replay, not by the first client
    assert set(servable._callables) == {("serving_default", ("x",)), ("classify_x_to_y", ("inputs",)),
                                        ("regress_x_to_y", ("inputs",))}
    assert run_warmup(servable) == 4
    servable.close()


def test_no_file_no_warmup(version_dir):
    servable = load(version_dir)
    assert servable._callables == {}
    assert run_warmup(servable) == 0
    servable.close()


def test_disabled_warmup_does_not_read_the_file(version_dir):
    (version_dir / WARMUP_REQUESTS_PATH).parent.mkdir(parents=True, exist_ok=True)
    (version_dir / WARMUP_REQUESTS_PATH).write_bytes(b"not a TFRecord")
    load(version_dir, warm_up=False).close()


def test_at_most_1000_records(version_dir):
    one = predict_log("serving_default", {"x": np.array([1.0], np.float32)})
    write_warmup_requests(version_dir, [one] * MAX_WARMUP_RECORDS)
    load(version_dir).close()
    write_warmup_requests(version_dir, [one] * (MAX_WARMUP_RECORDS + 1))
    with pytest.raises(InvalidArgument, match=r"Number of warmup records exceeds the maximum \(1000\) at "):
        load(version_dir)


@pytest.mark.parametrize("logs, error, fragment", [
    ([predict_log("nope", {"x": np.array([1.0], np.float32)})], InvalidArgument,
     'Serving signature name: "nope" not found in signature def'),
    ([predict_log("serving_default", {"x": np.array([1.0], np.float64)})], InvalidArgument, "Type mismatch"),
    ([example_log("regress_log", "serving_default")], InvalidArgument, "No regression inputs found in SignatureDef"),
    ([example_log("classify_log", "classify_x_to_y", xs=())], InvalidArgument, "Input is empty"),
])
def test_a_failing_request_fails_the_load(version_dir, logs, error, fragment):
    write_warmup_requests(version_dir, logs)
    with pytest.raises(error, match=fragment):
        load(version_dir)


def test_session_run_logs_are_unsupported(version_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    prediction_log = prediction_log_pb2.PredictionLog()
    prediction_log.session_run_log.request.feed.add()
    write_warmup_requests(version_dir, [prediction_log])
    with pytest.raises(Unimplemented, match="Unsupported log_type for warmup: 5"):
        load(version_dir)


def test_not_a_tfrecord_file_is_data_loss(version_dir):
    path = version_dir / WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x01" * 40)
    with pytest.raises(DataLoss, match="Please verify your warmup data is in TFRecord format"):
        load(version_dir)


def test_unparsable_record(version_dir):
    import tensorflow as tf

    path = version_dir / WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"\xff\xff\xff")
    with pytest.raises(InvalidArgument, match="Failed to parse warmup record"):
        load(version_dir)


def test_examples_with_context_are_merged_example_last():
    import tensorflow as tf
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    with_context = request_input.example_list_with_context
    with_context.context.CopyFrom(example(x=1.0, y=7.0))
    with_context.examples.extend([example(x=5.0), example(z=2.0)])
    merged = [tf.train.Example.FromString(raw) for raw in examples_of_input(request_input)]
    values = [{key: feature.float_list.value[0] for key, feature in e.features.feature.items()} for e in merged]
    assert values == [{"x": 5.0, "y": 7.0}, {"x": 1.0, "y": 7.0, "z": 2.0}]
