"""Predict codec tests, re-expressing json_tensor_test.cc (plus the error paths it implies)."""

import base64

import numpy as np
import orjson
import pytest

from model_server import errors
from model_server.predict_codec import PredictRequest, make_predict_response, parse_predict_body, request_to_tensors
from model_server.tensor_types import TensorSpec
from tests.support.serving_errors import error_message

F32 = {"default": TensorSpec("DT_FLOAT", None)}
I32 = {"default": TensorSpec("DT_INT32", None)}
STR = {"default": TensorSpec("DT_STRING", None)}
MULTI = {"int_tensor": TensorSpec("DT_INT32", None), "str_tensor": TensorSpec("DT_STRING", None)}


def convert(body, specs):
    return request_to_tensors(parse_predict_body(body if isinstance(body, bytes) else body.encode()), specs)


# ------------------------------------------------------------- parse_predict_body


@pytest.mark.parametrize(
    "body, message",
    [
        # Malformed JSON is json_text's (test_json_text.py); one case shows it reaches the caller.
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b'{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "'signature_name' key must be a string value."),
        (b'{"instances": [[1,2]], "inputs": [[1,2]]}', "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
        (b'{"instances": 5}', "Expecting 'instances' to be an list/array"),
        (b'{"instances": {"a": 1}}', "Expecting 'instances' to be an list/array"),
        (b'{"instances": []}', "No values in 'instances' array"),
        (b'{"signature_name": "x"}', "Missing 'inputs' or 'instances' key"),
    ],
)
def test_parse_predict_body_errors(body, message):
    assert message in error_message(parse_predict_body, body)


def test_parse_predict_body_formats():
    assert parse_predict_body(b'{"instances": [1]}') == PredictRequest("", "row", [1])
    assert parse_predict_body(b'{"signature_name": "s", "inputs": {"a": 1}}') == PredictRequest("s", "columnar", {"a": 1})


def test_nan_and_infinity_tokens():
    out = convert('{"instances": [1.0, -3.14, NaN, Infinity, -Infinity]}', F32)["default"]
    assert out.dtype == np.float32 and np.isnan(out[2]) and out[3] == np.inf and out[4] == -np.inf


# --------------------------------------------------------------- request_to_tensors


def test_single_unnamed_tensor():
    out = convert('{"instances": [[[1, 2]], [[3, 4]]]}', I32)["default"]
    assert out.dtype == np.int32 and out.tolist() == [[[1, 2]], [[3, 4]]]


@pytest.mark.parametrize(
    "dtype, values, np_dtype, expected",
    [
        ("DT_FLOAT", [1, 2.0, 3, 4, 5.003, 0.007, 0.0], np.float32, None),
        ("DT_DOUBLE", [1.0, 2, 3, 4, 0.662, 0, 0.0], np.float64, None),
        ("DT_FLOAT", [1435774380], np.float32, [1435774380.0]),
        ("DT_FLOAT", [1.7976931348623157e308, -1.7976931348623157e308], np.float32, [np.inf, -np.inf]),
        ("DT_FLOAT", [2.2250738585072014e-308], np.float32, [0.0]),
        ("DT_INT8", [1, -2, 300], np.int8, [1, -2, 44]),  # int_val narrowing wraps
        ("DT_INT16", [1, -2], np.int16, None),
        ("DT_UINT8", [255, 256], np.uint8, [255, 0]),
        ("DT_INT64", [2**63 - 1, -(2**63)], np.int64, None),
        ("DT_UINT32", [0, 2**32 - 1], np.uint32, None),
        ("DT_UINT64", [0, 2**64 - 1], np.uint64, None),
        ("DT_BOOL", [True, False], np.bool_, None),
        ("DT_STRING", ["a", "é", {"b64": "aW1hZ2UgYnl0ZXM="}], object, [b"a", "é".encode(), b"image bytes"]),
    ],
)
def test_dtypes(dtype, values, np_dtype, expected):
    out = convert(orjson.dumps({"instances": values}), {"x": TensorSpec(dtype, None)})["x"]
    assert out.dtype == np.dtype(np_dtype)
    want = values if expected is None else expected
    if np_dtype is not object:
        want = np.array(want, dtype=np_dtype).tolist()
    assert out.tolist() == want


@pytest.mark.parametrize(
    "dtype, value, message",
    [
        ("DT_FLOAT", '"a"', 'JSON Value: "a" Type: String is not of expected type: float'),
        ("DT_FLOAT", "true", "JSON Value: true Type: True is not of expected type: float"),
        ("DT_FLOAT", "null", "JSON Value: null Type: Null is not of expected type: float"),
        ("DT_DOUBLE", "false", "Type: False is not of expected type: double"),
        ("DT_INT32", "1.5", "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        ("DT_INT32", "2147483648", "is not of expected type: int32"),
        ("DT_INT8", "-2147483649", "is not of expected type: int8"),
        ("DT_INT64", "9223372036854775808", "is not of expected type: int64"),
        ("DT_UINT32", "-1", "is not of expected type: uint32"),
        ("DT_UINT64", "18446744073709551616", "is not of expected type: uint64"),
        ("DT_BOOL", "1", "Type: Number is not of expected type: bool"),
        ("DT_STRING", "1", "Type: Number is not of expected type: string"),
        ("DT_FLOAT", '{"b64": "YQ=="}', 'Type: Object is not of expected type: float'),
        ("DT_INT32", '{"a": 1}', "Type: Object is not of expected type: int32"),
        ("DT_STRING", '{"b64": "YQ==", "x": 1}', "not formatted correctly for base64 data"),
        ("DT_STRING", '{"b64": 5}', "not formatted correctly for base64 data"),
        ("DT_STRING", '{"b64": "!!!!"}', "Unable to base64 decode"),
        ("DT_STRING", '{"b64": "Y"}', "Unable to base64 decode"),
        ("DT_STRING", '{"b64": "Y=Q="}', "Unable to base64 decode"),
    ],
)
def test_columnar_value_errors(dtype, value, message):
    body = '{"inputs": [%s]}' % value
    assert message in error_message(convert, body, {"x": TensorSpec(dtype, None)})


@pytest.mark.parametrize("b64", ["YQ", "YQ=", "YQ=="])
def test_base64_padding_optional(b64):
    assert convert('{"inputs": {"b64": "%s"}}' % b64, STR)["default"].tolist() == b"a"


@pytest.mark.parametrize("dtype", ["DT_HALF", "DT_UINT16", "DT_COMPLEX64", "DT_BFLOAT16", "DT_RESOURCE"])
def test_dtypes_json_cannot_express(dtype):
    specs = {"x": TensorSpec(dtype, None)}
    message = error_message(convert, '{"inputs": [1.5]}', specs, cls=errors.Unimplemented)
    assert message == f"Conversion of JSON Value: 1.5 to type: {dtype[3:].lower()}"
    assert convert('{"inputs": []}', specs)["x"].shape == (0,)


@pytest.mark.parametrize(
    "instances, message",
    [
        ("[[1,2],[3,4],[5,6,7]]", "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
        ("[[1,2],[3,4],[[5,6]]]", "Expecting shape [2] but got: [1,2]"),
        ("[1, [1]]", "Expecting shape [] but got: [1]"),
        ("[[1,2],[\"a\", \"b\"]]", "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String is not of expected type: int32"),
        ("[[[1,2],[3]]]", "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ("[[[1,2],3]]", "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ("[[1,[2]]]", "Encountered list at unexpected level: 1 expected < 1"),
        ("[[], [1]]", "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 0 but got: 1"),
        ("[1, {\"a\": 1}]", "Expecting value/list but got object at item 1 of input list"),
    ],
)
def test_row_single_input_errors(instances, message):
    assert message in error_message(convert, '{"instances": %s}' % instances, I32)


def test_row_unsupported_dtype_is_wrapped_as_invalid_argument():
    message = error_message(convert, '{"instances": [1]}', {"x": TensorSpec("DT_HALF", None)})
    assert "Error: UNIMPLEMENTED: Conversion of JSON Value: 1 to type: half" in message


def test_row_b64_scalars_and_lists():
    out = convert('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', STR)["default"]
    assert out.tolist() == [b"hello", b"world"]
    out = convert('{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}', STR)["default"]
    assert out.shape == (2, 1)


def test_row_single_named_input():
    out = convert('{"instances": [{"default": [1, 2]}, {"default": [3, 4]}]}', I32)
    assert out["default"].tolist() == [[1, 2], [3, 4]]


def test_row_multiple_named_inputs():
    specs = {
        "int_tensor": TensorSpec("DT_INT32", None),
        "str_tensor": TensorSpec("DT_STRING", None),
        "float_tensor": TensorSpec("DT_FLOAT", None),
        "bin_tensor": TensorSpec("DT_STRING", None),
    }
    out = convert(
        """{"instances": [
          {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN], "bin_tensor": {"b64": "YQ=="}},
          {"int_tensor": [[4,5],[6,7],[8,9]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, 3], "bin_tensor": {"b64": "Yg=="}}
        ]}""",
        specs,
    )
    assert out["int_tensor"].shape == (2, 3, 2) and out["int_tensor"].dtype == np.int32
    assert out["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert out["float_tensor"].shape == (2, 2) and np.isnan(out["float_tensor"][0, 1])
    assert out["bin_tensor"].tolist() == [b"a", b"b"]


@pytest.mark.parametrize(
    "instances, message",
    [
        (
            '[{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]',
            "Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [3,2] but got: [1,3,2]",
        ),
        (
            '[{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]}, {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]',
            "Expecting tensor size: 8 but got: 6",
        ),
        ('[{"int_tensor": [1], "str_tensor": ["a"]}, [1, 20, 30]]', "Expecting object but got list at item 1 of input list"),
        ('[{"int_tensor": [1], "str_tensor": ["a"]}, {"b64": "YQ=="}]', "Expecting object but got list at item 1 of input list"),
        ('[[1], [2]]', "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map"),
        ('[{"b64": "YQ=="}]', "instances is a plain list, but expecting list of objects"),
        ('[{"int_tensor": [1], "str_tensor": ["a"], "x": 1}]', "Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named input: x"),
        ('[{"int_tensor": [1]}]', "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"int_tensor\": [1]\n} keys must be equal to: int_tensor,str_tensor"),
        ('[{"int_tensor": ["x"], "str_tensor": ["a"]}]', "key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"x\" Type: String is not of expected type: int32"),
    ],
)
def test_row_multiple_named_errors(instances, message):
    assert message in error_message(convert, '{"instances": %s}' % instances, MULTI)


def test_row_plain_list_after_object_single_input():
    message = error_message(convert, '{"instances": [{"default": ["baz", "bar"]}, ["baz", "bat"]]}', STR)
    assert "Expecting object but got list at item 1" in message
    message = error_message(convert, '{"instances": [["baz", "bar"], {"default": ["baz", "bat"]}]}', STR)
    assert "Expecting value/list but got object at item 1" in message


def test_columnar_single_input():
    assert convert('{"inputs": [[1, 2], [3, 4]]}', I32)["default"].tolist() == [[1, 2], [3, 4]]
    assert convert('{"inputs": 7}', I32)["default"].shape == ()
    assert convert('{"inputs": {"default": [1]}}', I32)["default"].tolist() == [1]
    assert convert('{"inputs": []}', I32)["default"].shape == (0,)


def test_columnar_multiple_inputs_ignores_extra_keys():
    out = convert('{"inputs": {"int_tensor": [[1, 2]], "str_tensor": "s", "extra": 1}}', MULTI)
    assert out["int_tensor"].tolist() == [[1, 2]] and out["str_tensor"].tolist() == b"s"


@pytest.mark.parametrize(
    "inputs, specs, message",
    [
        ("[1]", MULTI, "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map"),
        ('{"b64": "YQ=="}', MULTI, "inputs is a plain value/list, but expecting an object"),
        ('{"int_tensor": [1]}', MULTI, "Missing named input: str_tensor in 'inputs' object."),
        ('{"x": [1]}', I32, "Missing named input: default in 'inputs' object."),
        ("[[1,2],[3]]", I32, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ("[[], [1]]", I32, "Encountered list at unexpected size: 1 at level: 1 expected size: 0"),
    ],
)
def test_columnar_errors(inputs, specs, message):
    assert message in error_message(convert, '{"inputs": %s}' % inputs, specs)


def test_empty_signature_inputs():
    req = PredictRequest("", "row", [1])
    assert error_message(request_to_tensors, req, {}) == "Failed to get input map for signature: DEFAULT"
    req = PredictRequest("sig", "row", [1])
    assert error_message(request_to_tensors, req, {}) == "Failed to get input map for signature: sig"


def test_invalid_utf8_string_passes_through():
    out = convert(b'{"instances": ["\xff\xfe"]}', STR)["default"]
    assert out.tolist() == [b"\xff\xfe"]


def test_error_value_is_truncated():
    big = ["x" * 100] * 10
    message = error_message(convert, orjson.dumps({"inputs": [big, 1]}), STR)
    assert len(message) < 400


def test_large_inputs_roundtrip():
    img = np.random.default_rng(0).random((1, 299, 299, 3), dtype=np.float32)
    out = convert(orjson.dumps({"instances": img.tolist()}), F32)["default"]
    assert out.dtype == np.float32 and np.array_equal(out, img)
    raw = bytes(range(256)) * 5000
    body = orjson.dumps({"instances": [{"b64": base64.b64encode(raw).decode()}]})
    assert convert(body, STR)["default"][0] == raw


# ------------------------------------------------------------ make_predict_response


def loads(data: bytes):
    # Python's json accepts the NaN/Infinity tokens TF Serving writes.
    import json

    return json.loads(data)


def test_single_tensor_row_and_columnar():
    t = {"default": np.array([[[1, 2]], [[3, 4]], [[5, 6]]], dtype=np.int32)}
    assert loads(make_predict_response(t, "row")) == {"predictions": [[[1, 2]], [[3, 4]], [[5, 6]]]}
    assert loads(make_predict_response(t, "columnar")) == {"outputs": [[[1, 2]], [[3, 4]], [[5, 6]]]}


def test_single_scalar_batch_tensor():
    t = {"default": np.array([1, 2, 3, 4, 5], dtype=np.int64)}
    assert make_predict_response(t, "row") == b'{"predictions":[1,2,3,4,5]}'
    assert make_predict_response(t, "columnar") == b'{"outputs":[1,2,3,4,5]}'


def test_bytes_tensor_is_base64():
    t = {"out_bytes": np.array([b"\x00\xff", b"ab"], dtype=object)}
    assert loads(make_predict_response(t, "row")) == {"predictions": [{"b64": "AP8="}, {"b64": "YWI="}]}


def test_string_tensor_utf8_and_raw_bytes():
    t = {"s": np.array([b"caf\xc3\xa9", b"\xff\"\n"], dtype=object)}
    # Invalid UTF-8 is written verbatim (rapidjson does not validate), escapes kept.
    assert make_predict_response(t, "columnar") == b'{"outputs":["caf\xc3\xa9","\xff\\"\\u000a"]}'


def test_float_precision_and_non_finite():
    t = {"f": np.array([0.2, 1.0, 1 / 3, 9000000, np.nan, np.inf, -np.inf], dtype=np.float32)}
    data = make_predict_response(t, "row")
    assert data == b'{"predictions":[0.2,1.0,0.33333334,9000000.0,NaN,Infinity,-Infinity]}'
    assert np.float32(loads(data)["predictions"][2]) == np.float32(1 / 3)
    d = {"d": np.array([0.1, 1 / 3], dtype=np.float64)}
    assert make_predict_response(d, "columnar") == b'{"outputs":[0.1,0.3333333333333333]}'


def test_multiple_named_tensors():
    t = {
        "float_tensor": np.array([[1.0], [2.0]], dtype=np.float32),
        "str_tensor": np.array([b"a", b"b"], dtype=object),
        "bool_tensor": np.array([True, False]),
    }
    assert loads(make_predict_response(t, "row")) == {
        "predictions": [
            {"float_tensor": [1.0], "str_tensor": "a", "bool_tensor": True},
            {"float_tensor": [2.0], "str_tensor": "b", "bool_tensor": False},
        ]
    }
    assert loads(make_predict_response(t, "columnar")) == {
        "outputs": {"float_tensor": [[1.0], [2.0]], "str_tensor": ["a", "b"], "bool_tensor": [True, False]}
    }


def test_key_order_and_scalar_columnar():
    t = {"a": np.float32(0.5), "b": np.int32(1)}
    assert make_predict_response(t, "columnar", output_keys_order=["b", "a"]) == b'{"outputs":{"b":1,"a":0.5}}'


def test_zero_batch():
    assert loads(make_predict_response({"x": np.zeros((0, 3), np.float32)}, "row")) == {"predictions": []}
    t = {"x": np.zeros((0, 3), np.float32), "y": np.zeros((0,), np.int32)}
    assert loads(make_predict_response(t, "row")) == {"predictions": []}


@pytest.mark.parametrize(
    "outputs, fmt, message",
    [
        ({}, "row", "Cannot convert empty tensor map to JSON"),
        ({"x": np.zeros(2)}, "bogus", "Invalid request format"),
        ({"x": np.array([1 + 2j], np.complex64)}, "row", "Failed to write JSON value for tensor type: complex64"),
        ({"x": np.array([1], np.float16)}, "columnar", "Failed to write JSON value for tensor type: half"),
        ({"x": np.float32(1)}, "row", "Tensor name: x has no shape information "),
        ({"x": np.zeros((2, 1)), "y": np.zeros((3,))}, "row", "Tensor name: y has inconsistent batch size: 3 expecting: 2"),
        ({"x": np.zeros((0,)), "y": np.zeros((1,))}, "row", "inconsistent batch size"),
    ],
)
def test_make_predict_response_errors(outputs, fmt, message):
    assert message in error_message(make_predict_response, outputs, fmt)


def test_empty_unsupported_output_is_fine():
    assert make_predict_response({"x": np.zeros((0,), np.float16)}, "columnar") == b'{"outputs":[]}'
