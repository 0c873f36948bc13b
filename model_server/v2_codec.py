"""Open Inference Protocol (KServe v2) bodies <-> numpy tensors (numpy + orjson, no TensorFlow).

Follows kserve/open-inference-protocol ``specification/protocol/inference_rest.md`` and two of
Triton's extensions:

* binary tensor data (``extension_binary_data.md``): an input may carry
  ``"parameters": {"binary_data_size": n}`` instead of ``"data"``; its bytes follow the JSON in the
  body, in input order, and the header ``Inference-Header-Content-Length`` gives the JSON's length.
  Outputs are returned the same way when asked for with ``"binary_data": true`` on a requested
  output or ``"binary_data_output": true`` on the request. Elements are little-endian, row major;
  BOOL is one byte 0/1; each BYTES element is a 4-byte little-endian length and its bytes.
* classification (``extension_classification.md``): ``"classification": k`` on a requested output
  replaces it by a BYTES tensor of shape ``[..., k]`` whose elements read ``"value:index[:label]"``,
  best first.

The codec does not know the server: signature specs and labels are passed in, and every problem
is an ``InvalidArgument`` (HTTP 400) whose message names the offending input or output.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from model_server.errors import InvalidArgument
from model_server.tensor_types import TensorSpec, dtype_for, enum_name_of

# Request / response JSON keys (inference_rest.md).
ID_KEY = "id"
PARAMETERS_KEY = "parameters"
INPUTS_KEY = "inputs"
OUTPUTS_KEY = "outputs"
NAME_KEY = "name"
SHAPE_KEY = "shape"
DATATYPE_KEY = "datatype"
DATA_KEY = "data"
MODEL_NAME_KEY = "model_name"
MODEL_VERSION_KEY = "model_version"
# Parameters this server understands.
SIGNATURE_NAME_PARAMETER = "signature_name"      # ours: which SignatureDef runs (default serving_default)
BINARY_DATA_SIZE_PARAMETER = "binary_data_size"  # binary extension, on an input or response output
BINARY_DATA_PARAMETER = "binary_data"            # binary extension, on a requested output
BINARY_DATA_OUTPUT_PARAMETER = "binary_data_output"  # binary extension, on the request
CLASSIFICATION_PARAMETER = "classification"      # classification extension, on a requested output
# HTTP header giving the length of the JSON part when binary data follows it.
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"

BYTES = "BYTES"
BOOL = "BOOL"
# v2 datatype -> TensorFlow DataType enum name; numpy dtypes come from tensor_types.
TF_DTYPES: dict[str, str] = {
    BOOL: "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32", "UINT64": "DT_UINT64",
    "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64",
    "FP16": "DT_HALF", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", BYTES: "DT_STRING",
}
_DATATYPE_BY_TF = {tf_name: datatype for datatype, tf_name in TF_DTYPES.items()}
_LENGTH_PREFIX = struct.Struct("<I")
# Variable-size dimension in metadata shapes.
ANY_SIZE = -1
_QUOTE_LIMIT = 80
_NONE = object()


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of the request's ``outputs``: its name, binary flag (None: request default), top-k."""

    name: str
    binary: bool | None = None
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed inference request: tensors decoded, not yet checked against a signature."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None

    @property
    def signature_name(self) -> str | None:
        """The ``signature_name`` request parameter, if given."""
        return self.parameters.get(SIGNATURE_NAME_PARAMETER)

    @property
    def binary_output(self) -> bool:
        """Whether outputs go out as binary data unless a requested output says otherwise."""
        return bool(self.parameters.get(BINARY_DATA_OUTPUT_PARAMETER, False))


@dataclass(frozen=True)
class EncodedResponse:
    """A response body, its content type and, when binary data follows the JSON, the JSON's length."""

    body: bytes
    content_type: str
    header_length: int | None = None


# -- datatypes and metadata --------------------------------------------------------------------------


def datatype_of_tf(tf_dtype: str) -> str:
    """v2 datatype of a TensorFlow DataType enum name; InvalidArgument for types v2 cannot carry."""
    try:
        return _DATATYPE_BY_TF[tf_dtype]
    except KeyError:
        raise InvalidArgument(f"TensorFlow type {tf_dtype} has no Open Inference Protocol datatype") from None


def datatype_of_array(array: np.ndarray) -> str:
    """v2 datatype of a numpy array (object and string arrays are BYTES)."""
    return datatype_of_tf(enum_name_of(array))


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype holding a v2 datatype's elements, little-endian as the binary extension sends them."""
    dtype = dtype_for(TF_DTYPES[datatype]).np_dtype
    return dtype if dtype.kind in "Ob" else dtype.newbyteorder("<")


def metadata_shape(spec: TensorSpec) -> list[int]:
    """A signature shape as v2 metadata prints it: -1 for any size; ``[-1]`` for unknown rank too."""
    if spec.shape is None:
        return [ANY_SIZE]
    return [ANY_SIZE if dim is None else dim for dim in spec.shape]


def metadata_tensors(specs: Mapping[str, TensorSpec]) -> list[dict[str, Any]]:
    """``$metadata_tensor`` objects for a signature's inputs or outputs, sorted by name."""
    tensors = []
    for name in sorted(specs):
        spec = specs[name]
        datatype = _DATATYPE_BY_TF.get(spec.dtype, spec.dtype)  # say what it is rather than fail metadata
        tensors.append({NAME_KEY: name, DATATYPE_KEY: datatype, SHAPE_KEY: metadata_shape(spec)})
    return tensors


# -- requests ----------------------------------------------------------------------------------------


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The request body after its ``Content-Encoding`` (gzip or deflate, as tritonclient can send),
    at most ``limit`` bytes once decompressed; InvalidArgument for another encoding or a bad stream."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidArgument(f"Unsupported Content-Encoding {content_encoding!r}; use gzip, deflate or none")
    # wbits: 16 + MAX_WBITS reads a gzip wrapper, MAX_WBITS a zlib one ("deflate" in HTTP is zlib).
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(f"Request body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise InvalidArgument(f"Request body is over {limit} bytes once decompressed")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body given its Inference-Header-Content-Length value."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidArgument(f"{HEADER_LENGTH_HEADER} must be an integer, got {_quote(header_length)}") from None
    if not 0 <= length <= len(body):
        raise InvalidArgument(f"{HEADER_LENGTH_HEADER} {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an inference request body (JSON, then any binary tensor data) into tensors.

    Raises InvalidArgument naming the field or input that is wrong.
    """
    json_part, binary = split_body(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"Request body must be a JSON object, got {_quote(document)}")
    request_id = document.get(ID_KEY)
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f"'{ID_KEY}' must be a string, got {_quote(request_id)}")
    parameters = _parameters(document, "the request")
    signature = parameters.get(SIGNATURE_NAME_PARAMETER)
    if signature is not None and not isinstance(signature, str):
        raise InvalidArgument(f"Parameter '{SIGNATURE_NAME_PARAMETER}' must be a string, got {_quote(signature)}")
    if not isinstance(parameters.get(BINARY_DATA_OUTPUT_PARAMETER, False), bool):
        raise InvalidArgument(f"Parameter '{BINARY_DATA_OUTPUT_PARAMETER}' must be true or false")
    raw_inputs = document.get(INPUTS_KEY)
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgument(f"'{INPUTS_KEY}' must be a non-empty list of input tensors")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for raw in raw_inputs:
        name, datatype, array, offset = _parse_input(raw, binary, offset)
        if name in inputs:
            raise InvalidArgument(f"Input '{name}' is given more than once")
        inputs[name], datatypes[name] = array, datatype
    if offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} byte(s) of binary data after the last input's "
                              f"'{BINARY_DATA_SIZE_PARAMETER}'")
    outputs = _requested_outputs(document.get(OUTPUTS_KEY))
    return InferRequest(inputs, datatypes, request_id, parameters, outputs)


def _parameters(obj: dict, where: str) -> dict[str, Any]:
    parameters = obj.get(PARAMETERS_KEY, {})
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"'{PARAMETERS_KEY}' of {where} must be a JSON object, got {_quote(parameters)}")
    return parameters


def _parse_input(raw: object, binary: bytes, offset: int) -> tuple[str, str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"Each input must be a JSON object, got {_quote(raw)}")
    name = raw.get(NAME_KEY)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"Input without a '{NAME_KEY}': {_quote(raw)}")
    datatype, shape = raw.get(DATATYPE_KEY), raw.get(SHAPE_KEY)
    check_tensor_header(name, datatype, shape)
    parameters = _parameters(raw, f"input '{name}'")
    size = parameters.get(BINARY_DATA_SIZE_PARAMETER)
    if size is None:
        if DATA_KEY not in raw:
            raise InvalidArgument(f"Input '{name}' has neither '{DATA_KEY}' nor a '{BINARY_DATA_SIZE_PARAMETER}' "
                                  f"parameter")
        return name, datatype, tensor_from_values(name, datatype, shape, raw[DATA_KEY]), offset
    if DATA_KEY in raw:
        raise InvalidArgument(f"Input '{name}' has both '{DATA_KEY}' and '{BINARY_DATA_SIZE_PARAMETER}'")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"'{BINARY_DATA_SIZE_PARAMETER}' of input '{name}' must be a non-negative integer, "
                              f"got {_quote(size)}")
    if offset + size > len(binary):
        raise InvalidArgument(f"Input '{name}' announces {size} bytes of binary data but only "
                              f"{len(binary) - offset} remain in the body")
    chunk = binary[offset:offset + size]
    return name, datatype, tensor_from_binary(name, datatype, shape, chunk), offset + size


def check_tensor_header(name: str, datatype: object, shape: object) -> None:
    """InvalidArgument unless ``datatype`` is a v2 datatype and ``shape`` a list of non-negative ints."""
    if datatype not in TF_DTYPES:
        raise InvalidArgument(f"Input '{name}' has datatype {_quote(datatype)}; expected one of "
                              f"{', '.join(TF_DTYPES)}")
    if (not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InvalidArgument(f"Input '{name}' needs a '{SHAPE_KEY}' list of non-negative integers, "
                              f"got {_quote(shape)}")


def tensor_from_values(name: str, datatype: str, shape: list[int], data: object) -> np.ndarray:
    """A tensor from JSON-like ``data`` (Python values, flat or nested in row-major order), checked
    element by element: the JSON body's ``data``, or a gRPC request's typed contents."""
    count = math.prod(shape)
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        data = [data]  # a lone scalar is a one-element tensor
    if datatype == BYTES:
        flat = _flatten(data)
        if not all(isinstance(item, (str, bytes)) for item in flat):
            bad = next(item for item in flat if not isinstance(item, (str, bytes)))
            raise InvalidArgument(f"Input '{name}' is BYTES: its data must be strings, got {_quote(bad)}")
        _check_count(name, shape, count, len(flat))
        array = np.empty(len(flat), dtype=object)
        array[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in flat]
        return array.reshape(shape)
    try:
        values = np.array(data)
    except (ValueError, OverflowError):  # ragged nesting, or integers beyond 64 bits
        flat = _flatten(data)
        try:
            values = np.array(flat)
        except (ValueError, OverflowError):
            values = np.array(flat, dtype=object)
    _check_count(name, shape, count, values.size)
    if values.size == 0:
        return np.zeros(shape, dtype=dtype)
    _check_kind(name, datatype, values, data)
    if dtype.kind in "iu" and values.dtype.kind not in "iu":
        # Python ints that numpy widened to float64 or object (mixing int64 and uint64): keep them exact.
        values = np.array(_flatten(data), dtype=object)
    if dtype.kind in "iu":
        low, high = int(values.min()), int(values.max())  # Python ints: exact even for object arrays
        info = np.iinfo(dtype)
        if low < info.min or high > info.max:
            outside = low if low < info.min else high
            raise InvalidArgument(f"Input '{name}' value {outside} is out of range for {datatype}")
    return values.astype(dtype).reshape(shape)


def _check_kind(name: str, datatype: str, values: np.ndarray, data: list) -> None:
    kind = numpy_dtype(datatype).kind
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[kind]
    if values.dtype.kind in allowed:
        return
    # numpy turns mixed lists into strings or objects: find the culprit in what the client sent.
    flat = _flatten(data)
    bad = next((v for v in flat if not _is_kind(v, kind)), _NONE)
    if bad is _NONE:
        return  # Python ints that numpy could not hold in one integer type: the range check decides
    wanted = {"b": "true or false", "i": "integers", "u": "integers", "f": "numbers"}[kind]
    raise InvalidArgument(f"Input '{name}' is {datatype}: its data must be {wanted}, got {_quote(bad)}")


def _is_kind(value: object, kind: str) -> bool:
    if kind == "b":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (kind == "f" and isinstance(value, float))


def _flatten(data: list) -> list:
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _check_count(name: str, shape: list[int], count: int, got: int) -> None:
    if got != count:
        raise InvalidArgument(f"Input '{name}' has shape {shape} ({count} elements) but its data holds "
                              f"{got} element(s)")


def tensor_from_binary(name: str, datatype: str, shape: list[int], chunk: bytes) -> np.ndarray:
    """A tensor from its binary data (the binary extension's layout, also gRPC's raw contents)."""
    count = math.prod(shape)
    if datatype == BYTES:
        elements = _split_bytes_elements(name, chunk)
        _check_count(name, shape, count, len(elements))
        array = np.empty(len(elements), dtype=object)
        array[:] = elements
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidArgument(f"Input '{name}' of shape {shape} and datatype {datatype} needs {expected} bytes "
                              f"of binary data, got {len(chunk)}")
    if datatype == BOOL:
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise InvalidArgument(f"Input '{name}' is BOOL: each byte must be 0 or 1")
        return raw.astype(bool).reshape(shape)
    # astype to the native order copies, which also makes the array writable for TensorFlow.
    return np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _split_bytes_elements(name: str, chunk: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(chunk):
        if offset + _LENGTH_PREFIX.size > len(chunk):
            raise InvalidArgument(f"Input '{name}': BYTES binary data ends inside an element's 4-byte length")
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(chunk):
            raise InvalidArgument(f"Input '{name}': BYTES element of {length} bytes runs past its binary data")
        elements.append(chunk[offset:offset + length])
        offset += length
    return elements


def _requested_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidArgument(f"'{OUTPUTS_KEY}' must be a list of requested outputs, got {_quote(raw)}")
    requested: list[RequestedOutput] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get(NAME_KEY), str):
            raise InvalidArgument(f"Each requested output must be an object with a '{NAME_KEY}', got {_quote(item)}")
        name = item[NAME_KEY]
        parameters = _parameters(item, f"output '{name}'")
        binary = parameters.get(BINARY_DATA_PARAMETER)
        if binary is not None and not isinstance(binary, bool):
            raise InvalidArgument(f"'{BINARY_DATA_PARAMETER}' of output '{name}' must be true or false")
        k = parameters.get(CLASSIFICATION_PARAMETER, 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidArgument(f"'{CLASSIFICATION_PARAMETER}' of output '{name}' must be a non-negative "
                                  f"integer, got {_quote(k)}")
        if any(r.name == name for r in requested):
            raise InvalidArgument(f"Output '{name}' is requested more than once")
        requested.append(RequestedOutput(name, binary, k))
    return requested


def check_inputs(request: InferRequest, specs: Mapping[str, TensorSpec], signature: str) -> None:
    """Every input of ``signature`` given once, with its datatype; no others. Shapes are the model's check."""
    unknown = sorted(set(request.inputs) - set(specs))
    if unknown:
        raise InvalidArgument(f"Unexpected input '{unknown[0]}' for signature '{signature}'; it takes "
                              f"{_names(specs)}")
    missing = sorted(set(specs) - set(request.inputs))
    if missing:
        raise InvalidArgument(f"Missing input '{missing[0]}' of signature '{signature}'; it takes {_names(specs)}")
    for name, spec in specs.items():
        expected = _DATATYPE_BY_TF.get(spec.dtype, spec.dtype)
        if request.datatypes[name] != expected:
            raise InvalidArgument(f"Input '{name}' of signature '{signature}' is {expected}, got "
                                  f"{request.datatypes[name]}")


def check_outputs(requested: Sequence[RequestedOutput] | None, specs: Mapping[str, TensorSpec],
                  signature: str) -> None:
    """Every requested output is one of the signature's."""
    for output in requested or ():
        if output.name not in specs:
            raise InvalidArgument(f"Unexpected output '{output.name}' for signature '{signature}'; it has "
                                  f"{_names(specs)}")


def _names(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(f"'{name}'" for name in sorted(specs))


# -- responses ---------------------------------------------------------------------------------------


def classify(values: np.ndarray, k: int, labels: Sequence[str] | None = None) -> np.ndarray:
    """Top ``k`` of the last axis as BYTES ``"value:index[:label]"``, best first, ties by lower index.

    ``k`` larger than the number of classes returns them all. A label is added where ``labels``
    has one for that index.
    """
    if values.ndim == 0:
        raise InvalidArgument("classification needs an output with at least one dimension")
    if values.dtype.kind not in "biuf":
        raise InvalidArgument(f"classification needs a numeric output, got {datatype_of_array(values)}")
    k = min(k, values.shape[-1])
    # Stable sort of the negated values keeps equal scores in index order.
    order = np.argsort(-values.astype(np.float64), axis=-1, kind="stable")[..., :k]
    best = np.take_along_axis(values, order, axis=-1)
    out = np.empty(order.shape, dtype=object)
    for position in np.ndindex(order.shape):
        index = int(order[position])
        text = f"{_scalar_text(best[position])}:{index}"
        if labels is not None and index < len(labels):
            text += f":{labels[index]}"
        out[position] = text.encode("utf-8")
    return out


def _scalar_text(value: np.generic) -> str:
    # str() of a numpy scalar is the shortest text that reads back as the same value in its dtype.
    return str(value.item()) if value.dtype.kind in "biu" else str(value)


def selected_outputs(request: InferRequest, outputs: Mapping[str, np.ndarray],
                     labels: Sequence[str] | None = None) -> list[tuple[RequestedOutput, np.ndarray]]:
    """The outputs to answer ``request`` with: the requested ones in request order (all, by name,
    when none were requested), each replaced by its top k when it asks for classification."""
    requested = request.outputs if request.outputs is not None else [RequestedOutput(n) for n in sorted(outputs)]
    selected = []
    for wanted in requested:
        array = np.asarray(outputs[wanted.name])
        if wanted.classification:
            array = classify(array, wanted.classification, labels)
        selected.append((wanted, array))
    return selected


def encode_infer_response(model_name: str, model_version: str, request: InferRequest,
                          outputs: Mapping[str, np.ndarray],
                          labels: Sequence[str] | None = None) -> EncodedResponse:
    """The response to ``request`` with the model's ``outputs``: the requested ones in request order
    (all, by name, when none were requested), as JSON data or as binary data after the JSON."""
    response: dict[str, Any] = {MODEL_NAME_KEY: model_name, MODEL_VERSION_KEY: model_version}
    if request.id is not None:
        response[ID_KEY] = request.id
    tensors, chunks = [], []
    for wanted, array in selected_outputs(request, outputs, labels):
        binary = request.binary_output if wanted.binary is None else wanted.binary
        tensor: dict[str, Any] = {NAME_KEY: wanted.name, DATATYPE_KEY: datatype_of_array(array),
                                  SHAPE_KEY: list(array.shape)}
        if binary:
            chunk = tensor_to_binary(array)
            tensor[PARAMETERS_KEY] = {BINARY_DATA_SIZE_PARAMETER: len(chunk)}
            chunks.append(chunk)
        else:
            tensor[DATA_KEY] = _json_data(wanted.name, array)
        tensors.append(tensor)
    response[OUTPUTS_KEY] = tensors
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(header, JSON_CONTENT_TYPE)
    return EncodedResponse(b"".join([header, *chunks]), BINARY_CONTENT_TYPE, len(header))


def _json_data(name: str, array: np.ndarray) -> object:
    flat = np.ascontiguousarray(array).reshape(-1)
    if datatype_of_array(array) != BYTES:
        return flat
    try:
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in flat]
    except UnicodeDecodeError:
        raise InvalidArgument(f"Output '{name}' holds bytes that are not UTF-8 text; request it with "
                              f"'{BINARY_DATA_PARAMETER}': true") from None


def tensor_to_binary(array: np.ndarray) -> bytes:
    """Binary extension layout: little-endian row major; BYTES as length-prefixed elements."""
    if datatype_of_array(array) == BYTES:
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += [_LENGTH_PREFIX.pack(len(data)), data]
        return b"".join(parts)
    little = array.dtype.newbyteorder("<") if array.dtype.kind != "b" else array.dtype
    return np.ascontiguousarray(array, dtype=little).tobytes()


def _quote(value: object) -> str:
    try:
        text = orjson.dumps(value).decode("utf-8")
    except TypeError:
        text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "..."
