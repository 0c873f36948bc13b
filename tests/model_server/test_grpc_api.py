"""Unit tests of the gRPC front's pure parts: channel arguments and tensor <-> TensorProto conversion."""

from __future__ import annotations

import numpy as np
import pytest

from model_server.config import ConfigError, parse_channel_arguments, parse_flags

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_serving.apis", reason="needs tensorflow-serving-api (make venv installs it)")

from model_server.errors import InvalidArgument  # noqa: E402
from model_server.grpc_api import proto_to_tensor, tensor_to_proto  # noqa: E402


def test_channel_arguments_are_ints_when_they_parse_as_int32():
    assert parse_channel_arguments("grpc.max_receive_message_length=1048576,grpc.lb_policy_name=round_robin") == [
        ("grpc.max_receive_message_length", 1048576), ("grpc.lb_policy_name", "round_robin")]
    assert parse_channel_arguments("") == []
    assert parse_channel_arguments("a=4294967296") == [("a", "4294967296")]  # over int32: a string, like server.cc


def test_channel_argument_without_value_is_a_config_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_channel_arguments("grpc.max_receive_message_length")


def test_grpc_flags_have_tf_servings_defaults():
    config = parse_flags(["--grpc_socket_path=/tmp/s", "--grpc_max_threads=3"])
    assert (config.port, config.grpc_socket_path, config.grpc_max_threads) == (8500, "/tmp/s", 3)
    assert config.enable_serialization_as_tensor_content is False


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.0]), np.array([[1, 2]], np.int32),
    np.array([255, 0], np.uint8), np.array([2**40], np.int64), np.array([True, False]),
    np.array([b"a", b"\xff\x00"], dtype=object), np.array([1.0, 2.0], np.float16), np.zeros((0, 3), np.float32),
])
@pytest.mark.parametrize("as_content", [False, True])
def test_tensor_to_proto_round_trips_through_tf_make_ndarray(array, as_content):
    proto = tensor_to_proto(array, as_content)
    back = tf.make_ndarray(proto)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    numeric_typed = array.dtype.kind in "fiub" and array.dtype != np.float16
    if numeric_typed and array.size:
        assert bool(proto.tensor_content) == as_content  # AsProtoField unless asked for tensor_content


def test_proto_to_tensor_reports_the_alias_of_a_broken_tensor():
    proto = tf.make_tensor_proto(np.zeros(3, np.float32))
    proto.tensor_content = proto.tensor_content[:5]
    with pytest.raises(InvalidArgument, match="^tensor parsing error: pixels$"):
        proto_to_tensor("pixels", proto)
