"""v2 request/response codec as pure functions.

Expected binary layouts come from tritonclient (a client nobody here wrote): its
``generate_request_body`` builds requests and ``parse_response_body`` reads our responses.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest

from model_server.tensor_types import TensorSpec
from model_server.errors import InvalidArgument
from model_server.v2_codec import (TF_DTYPES, InferRequest, RequestedOutput, check_inputs, check_outputs, classify,
                                   decode_content, encode_infer_response, metadata_tensors, parse_infer_request)

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in requirements.txt")

ALL_TYPES = [t for t in TF_DTYPES if t != "BYTES"]


def triton_body(inputs, outputs=None, **kwargs) -> tuple[bytes, str | None]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    return body, None if json_size is None else str(json_size)


def triton_input(name, array, datatype, binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def sample(datatype: str) -> np.ndarray:
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = [info.min, 0, 1, 7, info.max - 1, info.max] if info else [-1.5, 0.0, 0.25, 3.0, 1e4, -2.0]
    return np.array(values, dtype=dtype).reshape(2, 3)


# tritonclient sends FP16 only as binary data.
@pytest.mark.parametrize("datatype, binary", [(t, b) for t in ALL_TYPES for b in (True, False) if b or t != "FP16"])
def test_every_datatype_json_and_binary(datatype, binary):
    array = sample(datatype)
    body, header = triton_body([triton_input("x", array, datatype, binary)])
    request = parse_infer_request(body, header)
    assert request.datatypes == {"x": datatype}
    got = request.inputs["x"]
    assert got.shape == array.shape and got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_input(binary):
    array = np.array([b"caf\xc3\xa9", b"", b"x" * 300], dtype=object)
    body, header = triton_body([triton_input("s", array, "BYTES", binary)])
    request = parse_infer_request(body, header)
    assert request.inputs["s"].tolist() == array.tolist()


def test_inputs_in_order_of_the_binary_part_and_parameters():
    a, b = np.arange(4, dtype=np.uint32).reshape(2, 2), np.array([True, False, True])
    body, header = triton_body([triton_input("input0", a, "UINT32"), triton_input("input1", b, "BOOL")],
                               outputs=[httpclient.InferRequestedOutput("output0", class_count=2)],
                               request_id="42", parameters={"signature_name": "other"})
    request = parse_infer_request(body, header)
    np.testing.assert_array_equal(request.inputs["input0"], a)
    np.testing.assert_array_equal(request.inputs["input1"], b)
    assert request.id == "42" and request.signature_name == "other"
    assert request.outputs == [RequestedOutput("output0", True, 2)]


def test_nested_json_data_is_row_major():
    body = b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}'
    np.testing.assert_array_equal(parse_infer_request(body).inputs["x"], [[1, 2], [3, 4]])


def _body(**input_fields) -> bytes:
    tensor = {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2], **input_fields}
    return orjson.dumps({"inputs": [{k: v for k, v in tensor.items() if v is not None}]})


def _binary_body(datatype: str, shape: list[int], size: int) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                     "parameters": {"binary_data_size": size}}]})


@pytest.mark.parametrize(
    "body, header, message",
    [
        (b"not json", None, "not valid JSON"),
        (b"[1]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, "'inputs' must be a non-empty list"),
        (b'{"id": 7, "inputs": [{}]}', None, "'id' must be a string"),
        (b'{"inputs": [1]}', None, "Each input must be a JSON object"),
        (_body(datatype="FLOAT32"), None, 'Input \'x\' has datatype "FLOAT32"'),
        (_body(shape=[-1]), None, "'shape' list of non-negative integers"),
        (_body(shape=[3]), None, "Input 'x' has shape [3] (3 elements) but its data holds 2 element(s)"),
        (_body(data=[1.5, 2]), None, "Input 'x' is INT32: its data must be integers, got 1.5"),
        (_body(data=[1, "2"]), None, "its data must be integers, got \"2\""),
        (_body(data=[True, False]), None, "its data must be integers, got true"),
        (_body(data=[1, 2**31]), None, "value 2147483648 is out of range for INT32"),
        # orjson reads integers beyond 64 bits as floats.
        (b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1,1180591620717411303424]}]}', None,
         "its data must be integers, got 1.18"),
        (b'{"inputs":[{"name":"x","shape":[2],"datatype":"UINT64","data":[1,18446744073709551615]}]}', None,
         None),
        (b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[-1,18446744073709551615]}]}', None,
         "value 18446744073709551615 is out of range for INT64"),
        (_body(datatype="UINT8", data=[-1, 2]), None, "value -1 is out of range for UINT8"),
        (_body(datatype="BOOL", data=[1, 0]), None, "its data must be true or false, got 1"),
        (_body(datatype="FP32", data=[1, None]), None, "its data must be numbers, got null"),
        (_body(datatype="BYTES", data=["a", 1]), None, "its data must be strings, got 1"),
        (_body(data=None), None, "has neither 'data' nor a 'binary_data_size'"),
        (_body(parameters={"binary_data_size": 8}), b"12345678", "has both 'data' and 'binary_data_size'"),
        (_binary_body("INT32", [2], 8), b"", "announces 8 bytes of binary data but only 0 remain"),
        (_binary_body("INT32", [2], 4), b"xxxx", "needs 8 bytes of binary data, got 4"),
        (_binary_body("INT32", [1], 4), b"xxxxyy", "2 byte(s) of binary data after the last input"),
        (_binary_body("BOOL", [2], 2), b"\x01\x02", "each byte must be 0 or 1"),
        (_binary_body("BYTES", [1], 6), struct.pack("<I", 9) + b"ab", "element of 9 bytes runs past its binary data"),
        (b"{}", "x", "Inference-Header-Content-Length must be an integer"),
        (b"{}", "9", "Inference-Header-Content-Length 9 is outside the body of 2 bytes"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}] * 2}), None,
         "Input 'x' is given more than once"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}],
                       "outputs": [{"name": "y", "parameters": {"classification": -2}}]}), None,
         "'classification' of output 'y' must be a non-negative integer"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}],
                       "parameters": {"binary_data_output": "yes"}}), None, "'binary_data_output' must be true"),
    ],
)
def test_bad_requests(body, header, message):
    if isinstance(header, bytes):  # the binary part: the header gives the JSON's length
        body, header = body + header, str(len(body))
    if message is None:  # the edge that is valid
        assert parse_infer_request(body, header).inputs["x"].tolist() == [1, 2**64 - 1]
        return
    with pytest.raises(InvalidArgument) as caught:
        parse_infer_request(body, header)
    assert message in caught.value.message


SPECS = {"a": TensorSpec("DT_FLOAT", (None, 2)), "b": TensorSpec("DT_STRING", None)}


def _request(**datatypes) -> InferRequest:
    return InferRequest({name: np.zeros(1) for name in datatypes}, dict(datatypes))


@pytest.mark.parametrize(
    "request_, message",
    [
        (_request(a="FP32"), "Missing input 'b' of signature 'sig'; it takes 'a', 'b'"),
        (_request(a="FP32", b="BYTES", c="FP32"), "Unexpected input 'c' for signature 'sig'"),
        (_request(a="FP64", b="BYTES"), "Input 'a' of signature 'sig' is FP32, got FP64"),
    ],
)
def test_check_inputs(request_, message):
    with pytest.raises(InvalidArgument) as caught:
        check_inputs(request_, SPECS, "sig")
    assert message in caught.value.message


def test_check_inputs_and_outputs_accept_the_signature():
    check_inputs(_request(a="FP32", b="BYTES"), SPECS, "sig")
    check_outputs([RequestedOutput("a")], SPECS, "sig")
    with pytest.raises(InvalidArgument, match="Unexpected output 'z' for signature 'sig'"):
        check_outputs([RequestedOutput("z")], SPECS, "sig")


def test_metadata_tensors():
    assert metadata_tensors(SPECS) == [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                                       {"name": "b", "datatype": "BYTES", "shape": [-1]}]


def test_classify_matches_the_extension_example():
    # extension_classification.md: [1.1, 3.3, 0.5, 2.4] with classification 2 -> ["3.3:1", "2.4:3"].
    scores = np.array([1.1, 3.3, 0.5, 2.4], dtype=np.float32)
    assert classify(scores, 2).tolist() == [b"3.3:1", b"2.4:3"]
    # Integers ([1, 5, 10, 4] in the same document) and labels.
    assert classify(np.array([1, 5, 10, 4]), 2, ["a", "b", "apple", "d"]).tolist() == [b"10:2:apple", b"5:1:b"]


def test_classify_batches_ties_and_large_k():
    scores = np.array([[0.5, 0.5, 0.1], [0.0, 0.2, 0.9]], dtype=np.float32)
    result = classify(scores, 5, ["x", "y"])
    assert result.shape == (2, 3)
    # Ties keep the lower index first; indices without a label have no label part.
    assert result[0].tolist() == [b"0.5:0:x", b"0.5:1:y", b"0.1:2"]
    assert result[1].tolist() == [b"0.9:2", b"0.2:1:y", b"0.0:0:x"]


def _parse_response(encoded):
    header = None if encoded.header_length is None else encoded.header_length
    return httpclient.InferenceServerClient.parse_response_body(encoded.body, header_length=header)


@pytest.mark.parametrize("binary", [True, False])
def test_response_read_by_tritonclient(binary):
    request = InferRequest({}, {}, id="7", parameters={"binary_data_output": binary},
                           outputs=[RequestedOutput("y"), RequestedOutput("s"), RequestedOutput("k", classification=1)])
    outputs = {"y": np.array([[2.5], [3.0]], dtype=np.float32), "s": np.array([b"ab", b"\xc3\xa9"], dtype=object),
               "k": np.array([[0.1, 0.7]], dtype=np.float32), "unasked": np.zeros(1)}
    encoded = encode_infer_response("m", "3", request, outputs)
    assert (encoded.header_length is not None) is binary
    result = _parse_response(encoded)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "7")
    assert [o["name"] for o in response["outputs"]] == ["y", "s", "k"]
    np.testing.assert_array_equal(result.as_numpy("y"), outputs["y"])
    assert result.as_numpy("y").dtype == np.float32
    assert [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("s").ravel()] == [b"ab", b"\xc3\xa9"]
    assert result.as_numpy("k").ravel().tolist() in ([b"0.7:1"], ["0.7:1"])


def test_output_binary_flag_overrides_the_request_default_and_all_outputs_come_by_name():
    request = InferRequest({}, {}, parameters={"binary_data_output": True})
    encoded = encode_infer_response("m", "1", request, {"b": np.arange(3), "a": np.ones(2, np.float16)})
    result = _parse_response(encoded)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["a", "b"]
    assert result.as_numpy("a").dtype == np.float16 and result.as_numpy("b").tolist() == [0, 1, 2]
    request = InferRequest({}, {}, parameters={"binary_data_output": True},
                           outputs=[RequestedOutput("b", binary=False)])
    encoded = encode_infer_response("m", "1", request, {"b": np.arange(3)})
    assert encoded.header_length is None and orjson.loads(encoded.body)["outputs"][0]["data"] == [0, 1, 2]


def test_non_utf8_bytes_need_binary_output():
    request = InferRequest({}, {}, outputs=[RequestedOutput("s")])
    with pytest.raises(InvalidArgument, match="not UTF-8 text; request it with 'binary_data': true"):
        encode_infer_response("m", "1", request, {"s": np.array([b"\xff"], dtype=object)})


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                                 (None, lambda data: data), ("identity", lambda data: data)])
def test_compressed_bodies(encoding, compress):
    body = b'{"inputs": []}' * 10
    assert decode_content(compress(body), encoding, 1000) == body


@pytest.mark.parametrize("body, encoding, message", [
    (b"x", "br", "Unsupported Content-Encoding 'br'"),
    (b"not gzip", "gzip", "not valid gzip data"),
    (gzip.compress(b"0" * 2000), "gzip", "over 1000 bytes once decompressed"),
])
def test_bad_compressed_bodies(body, encoding, message):
    with pytest.raises(InvalidArgument, match=message):
        decode_content(body, encoding, 1000)


def test_fp16_as_json_numbers():
    body = b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP16","data":[1.5,-2]}]}'
    got = parse_infer_request(body).inputs["x"]
    assert got.dtype == np.float16 and got.tolist() == [1.5, -2.0]
