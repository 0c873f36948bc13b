"""The gateway's hand-written TF Serving messages against the official classes, both ways.

``flask_server.grpc_messages`` writes and reads protobuf bytes without TensorFlow; here every
message it writes is parsed by ``tensorflow_serving.apis`` (and TensorFlow's ``make_ndarray``),
and every reply the official classes serialize is read back by it.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import wrappers_pb2

from flask_server import grpc_messages as messages

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis", reason="needs tensorflow-serving-api (make venv installs it)")

from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,  # noqa: E402
                                     predict_pb2)

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(2, 2, 3), np.array([-1.5, 2.25]), np.array([[-7, 3]], np.int32),
    np.array([0, 255], np.uint8), np.array([-(2**40), 5], np.int64), np.array([True, False]),
    np.array([1.0, -2.0], np.float16), np.zeros((0, 4), np.float32), np.array([-3, 4], np.int8),
    np.array([65535], np.uint16), np.array([2**32 - 1], np.uint32), np.array([2**63 + 5], np.uint64),
]


@pytest.mark.parametrize("version, label", [(None, None), (3, None), (0, None), (None, "stable")])
def test_model_spec_parses_as_the_official_one(version, label):
    spec = model_pb2.ModelSpec.FromString(messages.model_spec("m", version, label, "serving_uint8"))
    assert (spec.name, spec.signature_name) == ("m", "serving_uint8")
    assert spec.WhichOneof("version_choice") == ("version" if version is not None else
                                                 "version_label" if label else None)
    assert spec.version.value == (version or 0) and spec.version_label == (label or "")


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_predict_request_tensors_parse_as_official_tensor_protos(array):
    body = messages.predict_request(messages.model_spec("m"), {"x": array}, output_filter=["y"])
    request = predict_pb2.PredictRequest.FromString(body)
    back = tf.make_ndarray(request.inputs["x"])
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert list(request.output_filter) == ["y"] and request.model_spec.name == "m"


def test_string_tensor_is_a_dt_string_vector():
    images = [b"\x00\x01\xff", b"", b"abc"]
    request = predict_pb2.PredictRequest.FromString(
        messages.predict_request(messages.model_spec("m"), {"pixels_bytes": images}))
    assert request.inputs["pixels_bytes"].dtype == tf.string.as_datatype_enum
    assert list(tf.make_ndarray(request.inputs["pixels_bytes"])) == images


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
@pytest.mark.parametrize("as_content", [True, False])
def test_official_responses_are_read_back(array, as_content):
    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.signature_name = "m", "sig"
    response.model_spec.version.value = 7
    if as_content:
        response.outputs["y"].CopyFrom(tf.make_tensor_proto(array))
    else:
        from model_server.grpc_api import tensor_to_proto  # the model server's AsProtoField encoding

        response.outputs["y"].CopyFrom(tensor_to_proto(array, as_content=False))
    outputs, spec = messages.read_predict_response(response.SerializeToString())
    assert spec == messages.SpecInfo("m", 7, "sig")
    assert outputs["y"].dtype == array.dtype and outputs["y"].shape == array.shape
    np.testing.assert_array_equal(outputs["y"], array)


def test_short_typed_fields_repeat_the_last_value_like_make_ndarray():
    proto = tf.make_tensor_proto(1.5, shape=[2, 2])  # one float_val for four elements
    expected = tf.make_ndarray(proto)
    np.testing.assert_array_equal(messages.read_tensor(proto.SerializeToString()), expected)
    strings = tf.make_tensor_proto([b"a", b"b"])
    assert list(messages.read_tensor(strings.SerializeToString())) == [b"a", b"b"]


def test_broken_tensors_raise_message_error():
    proto = tf.make_tensor_proto(np.zeros(3, np.float32))
    proto.tensor_content = proto.tensor_content[:5]
    with pytest.raises(messages.MessageError, match="tensor_content has 5 bytes"):
        messages.read_tensor(proto.SerializeToString())
    with pytest.raises(messages.MessageError):
        messages.read_predict_response(b"\x0a\xff")  # a field longer than the message


def test_status_and_metadata_replies():
    assert get_model_status_pb2.GetModelStatusRequest.FromString(
        messages.status_request(messages.model_spec("m", 2))).model_spec.version.value == 2
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=2, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    failed = response.model_version_status.add(version=1, state=get_model_status_pb2.ModelVersionStatus.END)
    failed.status.error_code, failed.status.error_message = 5, "gone"
    assert messages.read_status_response(response.SerializeToString()) == [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "gone"}}]

    request = get_model_metadata_pb2.GetModelMetadataRequest.FromString(
        messages.metadata_request(messages.model_spec("m", label="canary")))
    assert list(request.metadata_field) == ["signature_def"] and request.model_spec.version_label == "canary"
    reply = get_model_metadata_pb2.GetModelMetadataResponse()
    reply.model_spec.name = "m"
    reply.model_spec.version.value = 4
    reply.metadata["signature_def"].Pack(get_model_metadata_pb2.SignatureDefMap())
    reply.metadata["export_info"].Pack(wrappers_pb2.StringValue(value='{"weights": "untrained"}'))
    assert messages.read_metadata_response(reply.SerializeToString()) == (
        messages.SpecInfo("m", 4, ""), {"export_info": '{"weights": "untrained"}'})
