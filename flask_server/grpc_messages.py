"""The few TF Serving gRPC messages the gateway needs, in protobuf wire format, without TensorFlow.

``tensorflow_serving.apis`` imports all of TensorFlow (543 MB, 3 s) because its messages embed
``tensorflow.TensorProto``; the gateway must stay under 100 MB and start in under a second. So the
requests it sends are written here field by field, and the replies it reads are walked the same
way, with the field numbers of TF Serving's ``.proto`` files (listed below). Pure functions of
bytes and numpy arrays; tests/gateway/test_grpc_messages.py checks every message against the
official classes in both directions.

* ``PredictRequest``: model_spec = 1, inputs = 2 (map<string, TensorProto>), output_filter = 3
* ``PredictResponse``: outputs = 1 (map), model_spec = 2
* ``GetModelStatusRequest``: model_spec = 1; ``GetModelStatusResponse``: model_version_status = 1
  (version = 1, state = 2, status = 3 {error_code = 1, error_message = 2})
* ``GetModelMetadataRequest``: model_spec = 1, metadata_field = 2; ``GetModelMetadataResponse``:
  model_spec = 1, metadata = 2 (map<string, google.protobuf.Any {type_url = 1, value = 2}>)
* ``ModelSpec``: name = 1, version = 2 (Int64Value, value = 1), signature_name = 3, version_label = 4
* ``TensorProto`` (tensorflow/core/framework/tensor.proto): dtype = 1, tensor_shape = 2 (dim = 2
  {size = 1}), tensor_content = 4, float_val = 5, double_val = 6, int_val = 7, string_val = 8,
  int64_val = 10, bool_val = 11, half_val = 13, uint32_val = 16, uint64_val = 17
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from serving_contract.export import SIGNATURE_DEF_METADATA_KEY
from serving_contract.protobuf_wire import WIRE_LEN, WIRE_VARINT, len_field, varint_field

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
METADATA_FIELDS_SIGNATURE_DEF = (SIGNATURE_DEF_METADATA_KEY,)  # all tensorflow_model_server answers
STRING_VALUE_TYPE = "google.protobuf.StringValue"

# Wire types
_FIXED64, _FIXED32 = 1, 5  # and WIRE_VARINT, WIRE_LEN from protobuf_wire
# tensorflow.DataType numbers (types.proto) -> numpy dtype; DT_STRING is handled on its own.
DT_STRING = 7
_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_DTYPE_BY_NUMPY = {dtype.newbyteorder("="): number for number, dtype in _NUMPY_BY_DTYPE.items()}
# DataType -> the TensorProto field that carries its values when tensor_content is empty.
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 9: 10, 10: 11, 17: 7, 19: 13, 22: 16, 23: 17}
# ModelVersionStatus.State and tensorflow.error.Code numbers -> the names TF Serving's REST API prints.
STATE_NAMES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
ERROR_CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


class MessageError(ValueError):
    """Bytes that are not the message they should be (truncated, wrong wire type, bad tensor)."""


# -- writing --------------------------------------------------------------------------------------

def model_spec(name: str, version: int | None = None, label: str | None = None, signature: str = "") -> bytes:
    """A serialized ModelSpec: a version or a label (the oneof), or neither for the latest."""
    out = len_field(1, name.encode())
    if version is not None:
        out += len_field(2, varint_field(1, version) if version else b"")
    if signature:
        out += len_field(3, signature.encode())
    if label is not None:
        out += len_field(4, label.encode())
    return out


def tensor_proto(array: np.ndarray | Sequence[bytes]) -> bytes:
    """A serialized TensorProto: numeric arrays as ``tensor_content``, a list of bytes as DT_STRING [N]."""
    if isinstance(array, np.ndarray) and array.dtype != object:
        dtype = _DTYPE_BY_NUMPY.get(array.dtype.newbyteorder("="))
        if dtype is None:
            raise TypeError(f"no TensorProto dtype for numpy {array.dtype}")
        shape, body = array.shape, len_field(4, np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())
    else:
        items = list(array)
        dtype, shape, body = DT_STRING, (len(items),), b"".join(len_field(8, bytes(item)) for item in items)
    dims = b"".join(len_field(2, varint_field(1, size) if size else b"") for size in shape)
    return varint_field(1, dtype) + len_field(2, dims) + body


def predict_inputs(inputs: Mapping[str, np.ndarray | Sequence[bytes]], output_filter: Sequence[str] = ()) -> bytes:
    """The inputs and output_filter fields of a PredictRequest; ``with_model_spec`` completes it.

    A message is its fields one after another, so the tensors can be written once and sent to
    any version (a retry after a hot swap) by prepending another model spec.
    """
    out = b"".join(len_field(2, len_field(1, alias.encode()) + len_field(2, tensor_proto(value)))
                   for alias, value in inputs.items())
    return out + b"".join(len_field(3, alias.encode()) for alias in output_filter)


def with_model_spec(spec: bytes, fields_after: bytes) -> bytes:
    """A request's ``model_spec`` field (field 1 in every request here) followed by its other fields."""
    return len_field(1, spec) + fields_after


def predict_request(spec: bytes, inputs: Mapping[str, np.ndarray | Sequence[bytes]],
                    output_filter: Sequence[str] = ()) -> bytes:
    """A serialized PredictRequest for a ``model_spec(...)`` and named input tensors."""
    return with_model_spec(spec, predict_inputs(inputs, output_filter))


def status_request(spec: bytes) -> bytes:
    """A serialized GetModelStatusRequest."""
    return with_model_spec(spec, b"")


def metadata_request(spec: bytes, fields: Sequence[str] = METADATA_FIELDS_SIGNATURE_DEF) -> bytes:
    """A serialized GetModelMetadataRequest (TF Serving knows only ``signature_def``; ours also
    ``export_info``)."""
    return with_model_spec(spec, b"".join(len_field(2, field.encode()) for field in fields))


# -- reading --------------------------------------------------------------------------------------

def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MessageError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field: an int for varints, bytes for the rest."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = _read_varint(view, pos)
        elif wire == WIRE_LEN:
            size, pos = _read_varint(view, pos)
            value, pos = view[pos:pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, pos = view[pos:pos + size], pos + size
        else:
            raise MessageError(f"unsupported wire type {wire} for field {field}")
        if pos > len(view):
            raise MessageError(f"field {field} runs past the end of the message")
        yield field, wire, value


def _signed(value: int, bits: int = 64) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


@dataclasses.dataclass(frozen=True)
class SpecInfo:
    """The model_spec of a reply: which model, version and signature answered."""

    name: str = ""
    version: int | None = None
    signature_name: str = ""


def read_model_spec(data: bytes | memoryview) -> SpecInfo:
    """A ModelSpec's name, version (None when unset) and signature name."""
    name, version, signature = "", None, ""
    for field, _, value in fields(data):
        if field == 1:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 2:
            version = 0
            for inner, _, number in fields(value):
                if inner == 1:
                    version = _signed(number)
        elif field == 3:
            signature = bytes(value).decode("utf-8", "replace")
    return SpecInfo(name, version, signature)


def _packed(value: int | memoryview, wire: int, dtype: str) -> list:
    """Values of a repeated numeric field: packed (one LEN field) or one by one."""
    if wire == WIRE_LEN:
        if dtype in ("<f4", "<f8"):
            return np.frombuffer(value, dtype).tolist()
        out, pos, view = [], 0, value
        while pos < len(view):
            number, pos = _read_varint(view, pos)
            out.append(number)
        return out
    if wire == WIRE_VARINT:
        return [value]
    return np.frombuffer(value, dtype).tolist()


def read_tensor(data: bytes | memoryview) -> np.ndarray:
    """A TensorProto as numpy, from ``tensor_content`` or the typed value fields.

    Like ``tf.make_ndarray``: fewer values than the shape holds repeat the last one; none means
    zeros. Raises MessageError for an unknown dtype or a content of the wrong size.
    """
    dtype, shape, content, values = 0, [], None, []
    for field, wire, value in fields(data):
        if field == 1:
            dtype = value
        elif field == 2:
            shape = _shape(value)
        elif field == 4:
            content = bytes(value)
        elif field == 8 and dtype in (0, DT_STRING):
            values.append(bytes(value))
        elif field in (5, 6, 7, 10, 11, 13, 16, 17):
            values.extend(_packed(value, wire, {5: "<f4", 6: "<f8"}.get(field, "")))
    size = int(np.prod(shape)) if shape else 1
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return _fill(array, size, b"").reshape(shape)
    numpy_dtype = _NUMPY_BY_DTYPE.get(dtype)
    if numpy_dtype is None:
        raise MessageError(f"unsupported tensor dtype {dtype}")
    if content is not None:
        if len(content) != size * numpy_dtype.itemsize:
            raise MessageError(f"tensor_content has {len(content)} bytes, shape {shape} needs "
                               f"{size * numpy_dtype.itemsize}")
        return np.frombuffer(content, numpy_dtype).reshape(shape)
    if dtype == 19:  # half_val carries the float16 bit patterns
        array = np.array(values, dtype="<u2").view("<f2")
    elif dtype in (3, 5, 6, 9):  # signed: varints carry negative numbers as 64-bit two's complement
        array = np.array([_signed(v) for v in values], dtype=numpy_dtype)
    else:
        array = np.array(values, dtype=numpy_dtype)
    return _fill(array, size, 0).reshape(shape)


def _shape(data: memoryview) -> list[int]:
    """A TensorShapeProto's dim sizes (a Dim of size 0 is an empty message)."""
    shape = []
    for dim_field, _, dim in fields(data):
        if dim_field == 2:
            size = 0
            for size_field, _, number in fields(dim):
                if size_field == 1:
                    size = _signed(number)
            shape.append(size)
    return shape


def _fill(array: np.ndarray, size: int, zero: object) -> np.ndarray:
    if len(array) == size:
        return array
    if len(array) > size:
        raise MessageError(f"tensor has {len(array)} values, its shape holds {size}")
    if not len(array):
        return np.full(size, zero, dtype=array.dtype)
    return np.concatenate([array, np.full(size - len(array), array[-1], dtype=array.dtype)])


def read_predict_response(data: bytes) -> tuple[dict[str, np.ndarray], SpecInfo]:
    """A PredictResponse's output tensors by alias, and its model_spec."""
    outputs: dict[str, np.ndarray] = {}
    spec = SpecInfo()
    for field, _, value in fields(data):
        if field == 1:
            key, tensor = "", b""
            for entry_field, _, entry in fields(value):
                if entry_field == 1:
                    key = bytes(entry).decode("utf-8", "replace")
                elif entry_field == 2:
                    tensor = entry
            outputs[key] = read_tensor(tensor)
        elif field == 2:
            spec = read_model_spec(value)
    return outputs, spec


def read_status_response(data: bytes) -> list[dict]:
    """GetModelStatusResponse as TF Serving's REST API prints it: ``model_version_status`` entries."""
    statuses = []
    for field, _, value in fields(data):
        if field != 1:
            continue
        version, state, code, message = 0, 0, 0, ""
        for inner, _, item in fields(value):
            if inner == 1:
                version = _signed(item)
            elif inner == 2:
                state = item
            elif inner == 3:
                for status_field, _, status_item in fields(item):
                    if status_field == 1:
                        code = status_item
                    elif status_field == 2:
                        message = bytes(status_item).decode("utf-8", "replace")
        statuses.append({"version": str(version), "state": STATE_NAMES.get(state, str(state)),
                         "status": {"error_code": ERROR_CODE_NAMES[code] if code < len(ERROR_CODE_NAMES)
                                    else str(code), "error_message": message}})
    return statuses


def read_metadata_response(data: bytes) -> tuple[SpecInfo, dict[str, str]]:
    """A GetModelMetadataResponse's model_spec, and its metadata entries that hold a
    ``google.protobuf.StringValue`` (our model server's ``export_info``), as text by key.

    Other entries (the packed SignatureDefMap) are skipped: the gateway does not need them.
    """
    spec, texts = SpecInfo(), {}
    for field, _, value in fields(data):
        if field == 1:
            spec = read_model_spec(value)
        elif field == 2:
            key, type_url, packed = "", "", b""
            for entry_field, _, entry in fields(value):
                if entry_field == 1:
                    key = bytes(entry).decode("utf-8", "replace")
                elif entry_field == 2:  # google.protobuf.Any: type_url = 1, value = 2
                    for any_field, _, item in fields(entry):
                        if any_field == 1:
                            type_url = bytes(item).decode("utf-8", "replace")
                        elif any_field == 2:
                            packed = item
            if type_url.endswith("/" + STRING_VALUE_TYPE):
                texts[key] = "".join(bytes(item).decode("utf-8", "replace")
                                     for number, _, item in fields(packed) if number == 1)
    return spec, texts
