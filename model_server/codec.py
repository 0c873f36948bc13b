"""JSON <-> tensor codec of TF Serving's REST API (numpy + orjson, no TensorFlow).

Behaviour, messages and error codes follow ``tensorflow_serving/util/json_tensor.cc``:
request bodies are parsed like rapidjson with NaN/Infinity allowed and trailing
bytes ignored; tensors are built with the same dense-shape rules; responses use
the same layout, ``{"b64": ...}`` for ``*_bytes`` outputs and bare ``NaN`` /
``Infinity`` tokens for non-finite floats.

Conversion has a fast path (C-level flattening and numpy) that only ever succeeds;
whenever it cannot prove a value valid it defers to the exact path, which walks the
value like json_tensor.cc does so the first error reported is TF Serving's.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import orjson

from model_server.errors import InvalidArgument, ServingError, Unimplemented, format_value

# JSON keys, named as in json_tensor.cc.
kPredictRequestSignatureKey = "signature_name"
kPredictRequestInstancesKey = "instances"
kPredictRequestInputsKey = "inputs"
kClassifyRegressRequestContextKey = "context"
kClassifyRegressRequestExamplesKey = "examples"
kPredictResponsePredictionsKey = "predictions"
kPredictResponseOutputsKey = "outputs"
# api_rest.md says "result" but json_tensor.cc (what clients actually get) writes "results".
kClassifyRegressResponseKey = "results"
kBase64Key = "b64"
kBytesTensorNameSuffix = "_bytes"

FORMAT_ROW = "row"
FORMAT_COLUMNAR = "columnar"

# Raw JSON tokens TF Serving writes for non-finite floats (not strict JSON).
_NAN_TOKEN = orjson.Fragment(b"NaN")
_POS_INF_TOKEN = orjson.Fragment(b"Infinity")
_NEG_INF_TOKEN = orjson.Fragment(b"-Infinity")

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

try:
    # Optional SIMD decoder: 0.08 ms instead of binascii's 3-7 ms for one InceptionV3 image
    # (1.9 MB of base64), which was ~80 % of the server's own time per serving_bytes request.
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # not a hard dependency: binascii gives the same answers, only slower
    _simd_b64decode = None


@dataclass(frozen=True)
class TensorSpec:
    """Signature input: TF dtype enum name (e.g. "DT_FLOAT") and shape (None = unknown rank)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass
class PredictRequest:
    """A syntactically valid predict body, before conversion against a signature.

    ``signature_name`` is "" when absent (caller uses "serving_default"); ``format``
    is "row" (``instances``) or "columnar" (``inputs``); ``raw`` is that key's value.
    """

    signature_name: str
    format: str
    raw: object


# --------------------------------------------------------------------------- dtypes


@dataclass(frozen=True)
class _DType:
    """How JSON values convert to one TF dtype (AddValueToTensor's switch)."""

    enum_name: str
    np_dtype: np.dtype
    # "number", "int", "bool", "string"; None = TF Serving cannot convert JSON to it.
    json_kind: str | None
    int_range: tuple[int, int] | None = None

    @property
    def tf_name(self) -> str:
        """DataTypeString() form used in messages, e.g. "float", "half"."""
        return self.enum_name[3:].lower()


_INT32 = (-(2**31), 2**31 - 1)
_DTYPES: dict[str, _DType] = {
    d.enum_name: d
    for d in (
        _DType("DT_FLOAT", np.dtype(np.float32), "number"),
        _DType("DT_DOUBLE", np.dtype(np.float64), "number"),
        # JSON accepts any int32 for these; narrowing wraps like TF's int_val cast.
        _DType("DT_INT32", np.dtype(np.int32), "int", _INT32),
        _DType("DT_INT16", np.dtype(np.int16), "int", _INT32),
        _DType("DT_INT8", np.dtype(np.int8), "int", _INT32),
        _DType("DT_UINT8", np.dtype(np.uint8), "int", _INT32),
        _DType("DT_INT64", np.dtype(np.int64), "int", (-(2**63), 2**63 - 1)),
        _DType("DT_UINT32", np.dtype(np.uint32), "int", (0, 2**32 - 1)),
        _DType("DT_UINT64", np.dtype(np.uint64), "int", (0, 2**64 - 1)),
        _DType("DT_BOOL", np.dtype(np.bool_), "bool"),
        _DType("DT_STRING", np.dtype(object), "string"),
        # json_tensor.cc has no JSON conversion for these (UNIMPLEMENTED on input,
        # INVALID_ARGUMENT on output); the numpy dtype only serves empty tensors.
        _DType("DT_HALF", np.dtype(np.float16), None),
        _DType("DT_UINT16", np.dtype(np.uint16), None),
        _DType("DT_COMPLEX64", np.dtype(np.complex64), None),
        _DType("DT_COMPLEX128", np.dtype(np.complex128), None),
    )
}


def _dtype_for(enum_name: str) -> _DType:
    known = _DTYPES.get(enum_name)
    return known if known is not None else _DType(enum_name, np.dtype(object), None)


def _enum_name_of(arr: np.ndarray) -> str:
    """TF enum name of a numpy array's dtype (string arrays are DT_STRING)."""
    if arr.dtype.kind in "OSU":
        return "DT_STRING"
    for d in _DTYPES.values():
        if d.np_dtype == arr.dtype and d.json_kind != "string":
            return d.enum_name
    return "DT_" + arr.dtype.name.upper()


# ---------------------------------------------------------------------- JSON input

_EMPTY_DOCUMENT = "The document is empty."
_WHITESPACE = " \t\n\r"

# Python json messages -> rapidjson GetParseError_En() wording.
_PARSE_ERROR_WORDING = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


def json_type_name(val: object) -> str:
    """JsonTypeString(): rapidjson's name for a JSON value's type, for messages."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _parse_error(message: str, offset: int) -> InvalidArgument:
    return InvalidArgument(f"JSON Parse error: {message} at offset: {offset}")


def _unclosed_container(text: str, end: int) -> str:
    """The innermost bracket open at ``end`` ("{" or "["), for comma errors."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def _parse_lenient(body: bytes) -> object:
    """Parse what orjson rejects but rapidjson (as TF Serving configures it) accepts.

    That is NaN/Infinity tokens, trailing bytes after the document, integers beyond
    64 bits and invalid UTF-8 in strings (kept as surrogate escapes).
    """
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise _parse_error(_EMPTY_DOCUMENT, start)
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        if exc.msg == "Expecting ',' delimiter":
            wording = (
                "Missing a comma or ']' after an array element."
                if _unclosed_container(text, exc.pos) == "["
                else "Missing a comma or '}' after an object member."
            )
        else:
            wording = _PARSE_ERROR_WORDING.get(exc.msg, "Invalid value.")
        raise _parse_error(wording, exc.pos) from None
    except RecursionError:
        # rapidjson parses iteratively; Python cannot follow arbitrary nesting.
        raise _parse_error("Document nested too deeply.", start) from None
    return value


def _parse_json_object(body: bytes) -> dict:
    """ParseJson(): parse a request body that must be a JSON object."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_lenient(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {format_value(doc)} Is not object")
    return doc


def _signature_name(doc: dict) -> str:
    """FillSignature(): the optional signature_name, which must be a string."""
    name = doc.get(kPredictRequestSignatureKey, "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {format_value(doc)} not formatted correctly. "
            f"'{kPredictRequestSignatureKey}' key must be a string value."
        )
    return name


def _format_error(doc: object, detail: str) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {format_value(doc)} {detail}")


def parse_predict_body(body: bytes) -> PredictRequest:
    """Parse and check the envelope of a predict request body.

    Raises InvalidArgument with TF Serving's messages for malformed JSON, a
    non-object document, a non-string signature_name, both or neither of
    "instances"/"inputs", a non-list or empty "instances".
    """
    doc = _parse_json_object(body)
    signature_name = _signature_name(doc)
    has_instances = kPredictRequestInstancesKey in doc
    has_inputs = kPredictRequestInputsKey in doc
    if has_instances and has_inputs:
        raise _format_error(
            doc,
            "Not formatted correctly expecting only one of "
            f"'{kPredictRequestInputsKey}' or '{kPredictRequestInstancesKey}' keys to exist ",
        )
    if has_instances:
        instances = doc[kPredictRequestInstancesKey]
        if not isinstance(instances, list):
            raise _format_error(doc, f"Expecting '{kPredictRequestInstancesKey}' to be an list/array")
        if not instances:
            raise _format_error(doc, f"No values in '{kPredictRequestInstancesKey}' array")
        return PredictRequest(signature_name, FORMAT_ROW, instances)
    if has_inputs:
        return PredictRequest(signature_name, FORMAT_COLUMNAR, doc[kPredictRequestInputsKey])
    raise InvalidArgument(
        f"Missing '{kPredictRequestInputsKey}' or '{kPredictRequestInstancesKey}' key"
    )


# ------------------------------------------------------------------ JSON -> tensor


def is_base64_object(val: object) -> bool:
    """A ``{"b64": "<string>"}`` object: exactly one key, mapping to a string."""
    return type(val) is dict and len(val) == 1 and isinstance(val.get(kBase64Key), str)


def decode_base64_object(val: object) -> bytes:
    """Decode ``{"b64": ...}`` like absl::Base64Unescape (padding optional)."""
    if not is_base64_object(val):
        raise InvalidArgument(
            f"JSON Value: {format_value(val)} not formatted correctly for base64 data"
        )
    text = val[kBase64Key]
    missing = -len(text) % 4
    # find() rather than `"=" in text[:-2]`, which would copy a multi-megabyte string.
    if missing == 3 or text.find("=", 0, len(text) - 2) != -1:
        raise InvalidArgument("Unable to base64 decode")
    padded = text + "=" * missing
    if _simd_b64decode is not None:
        try:
            return _simd_b64decode(padded, validate=True)
        except ValueError:
            # pybase64 is stricter than binascii about some padding (e.g. "QUJD==", which
            # binascii accepts): binascii alone decides what is invalid, so answers never change.
            pass
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def _utf8_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Invalid UTF-8 from the lenient parser or a lone \uD800 escape:
        # hand the model the bytes the client sent, as rapidjson would.
        return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass")


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _type_error(val: object, dtype: _DType) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {format_value(val)} Type: {json_type_name(val)} "
        f"is not of expected type: {dtype.tf_name}"
    )


def _leaf_value(val: object, dtype: _DType) -> object:
    """One scalar of a tensor: AddValueToTensor() plus the b64 rule of FillTensorProto()."""
    if isinstance(val, dict):
        if dtype.json_kind == "string":
            return decode_base64_object(val)
        raise _type_error(val, dtype)
    kind = dtype.json_kind
    t = type(val)
    if kind == "number":
        if t is float or t is int:
            return val
    elif kind == "int":
        lo, hi = dtype.int_range
        if t is int and lo <= val <= hi:
            return val
    elif kind == "bool":
        if t is bool:
            return val
    elif kind == "string":
        if t is str:
            return _utf8_bytes(val)
    else:
        raise Unimplemented(
            f"Conversion of JSON Value: {format_value(val)} to type: {dtype.tf_name}"
        )
    raise _type_error(val, dtype)


def _dense_shape(val: object) -> tuple[int, ...]:
    """GetDenseTensorShape(): dims taken from the first element at each level."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return tuple(shape)


def _to_array(flat: list, shape: tuple[int, ...], dtype: _DType) -> np.ndarray:
    """Pack already-validated scalars into an ndarray of ``dtype``."""
    if dtype.json_kind == "string" or dtype.json_kind is None:
        arr = np.empty(len(flat), dtype=dtype.np_dtype)
        arr[:] = flat
        return arr.reshape(shape)
    if dtype.json_kind == "int":
        # Build wide first: numpy refuses out-of-range Python ints for narrow
        # types, while TF wraps int_val into int8/int16/uint8.
        wide = np.uint64 if dtype.enum_name == "DT_UINT64" else np.int64
        return np.array(flat, dtype=wide).astype(dtype.np_dtype, copy=False).reshape(shape)
    with np.errstate(over="ignore"):
        # Doubles beyond float32 range become +-inf, as static_cast<float> does.
        return np.array(flat, dtype=np.float64).astype(dtype.np_dtype, copy=False).reshape(shape)


def _fast_leaves(leaves: list, dtype: _DType) -> list | np.ndarray | None:
    """Validate scalars by type sets in C; None if any might be invalid."""
    kind = dtype.json_kind
    types = set(map(type, leaves))
    if kind == "number":
        if types <= {float, int}:
            return leaves
    elif kind == "int":
        if types <= {int}:
            try:
                wide = np.array(leaves, dtype=np.int64)
            except OverflowError:
                return None
            lo, hi = dtype.int_range
            if wide.size and (wide.min() < lo or wide.max() > hi):
                return None
            return wide
    elif kind == "bool":
        if types <= {bool}:
            return leaves
    elif kind == "string":
        try:
            return [_leaf_value(v, dtype) for v in leaves]
        except ServingError:
            return None
    elif not leaves:
        return leaves
    return None


def _convert_fast(val: object, dtype: _DType) -> np.ndarray | None:
    """Whole value -> ndarray using C-level loops, or None to defer to the exact walk."""
    shape = _dense_shape(val)
    items = [val]
    for dim in shape:
        if set(map(type, items)) - {list} or set(map(len, items)) - {dim}:
            return None
        items = list(chain.from_iterable(items))
    leaves = _fast_leaves(items, dtype)
    if leaves is None:
        return None
    if isinstance(leaves, np.ndarray):
        return leaves.astype(dtype.np_dtype, copy=False).reshape(shape)
    try:
        return _to_array(leaves, shape, dtype)
    except OverflowError:
        return None


def _fill_exact(val: object, level: int, shape: tuple[int, ...], dtype: _DType, out: list) -> None:
    """FillTensorProto(): depth-first walk reporting the first error TF Serving would."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {format_value(val)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_leaf_value(val, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(val)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in val:
        _fill_exact(item, level + 1, shape, dtype, out)


def _convert_value(val: object, dtype: _DType) -> np.ndarray:
    """One JSON value -> one dense tensor, with TF Serving's errors."""
    fast = _convert_fast(val, dtype)
    if fast is not None:
        return fast
    shape = _dense_shape(val)
    flat: list = []
    try:
        _fill_exact(val, 0, shape, dtype, flat)
    except RecursionError:
        raise InvalidArgument("JSON Value nested too deeply to convert to a tensor") from None
    return _to_array(flat, shape, dtype)


def _shape_string(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _is_element_object(val: object) -> bool:
    return isinstance(val, dict) and not is_base64_object(val)


class _RowAccumulator:
    """AddInstanceItem(): per-input tensors of one "instances" list, checked alike."""

    def __init__(self, dtypes: Mapping[str, _DType]) -> None:
        self._dtypes = dtypes
        self.rows: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, item: object) -> None:
        if name not in self._dtypes:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        tensor = _convert_value(item, self._dtypes[name])
        rows = self.rows.setdefault(name, [])
        if rows:
            expected = rows[0]
            if expected.size != tensor.size:
                raise InvalidArgument(
                    f"Expecting tensor size: {expected.size} but got: {tensor.size}"
                )
            if expected.shape != tensor.shape:
                raise InvalidArgument(
                    f"Expecting shape {_shape_string(expected.shape)} "
                    f"but got: {_shape_string(tensor.shape)}"
                )
        rows.append(tensor)

    def stacked(self) -> dict[str, np.ndarray]:
        return {name: np.stack(rows) for name, rows in self.rows.items()}


def _element_error(index: int, inner: ServingError, key: str | None = None) -> InvalidArgument:
    where = f"{index} key: {key}" if key is not None else f"{index}"
    return InvalidArgument(
        f"Failed to process element: {where} of '{kPredictRequestInstancesKey}' list. "
        f"Error: {inner.status_string()}"
    )


def _rows_exact(instances: list, dtypes: Mapping[str, _DType], as_objects: bool) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList(), element by element."""
    acc = _RowAccumulator(dtypes)
    input_names = sorted(dtypes)
    for index, elem in enumerate(instances):
        if as_objects:
            if not _is_element_object(elem):
                raise InvalidArgument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in elem.items():
                try:
                    acc.add(name, item)
                except ServingError as exc:
                    raise _element_error(index, exc, name) from None
            if sorted(elem) != input_names:
                raise InvalidArgument(
                    f"Failed to process element: {index} of '{kPredictRequestInstancesKey}' "
                    f"list. JSON object: {format_value(elem)} keys must be equal to: "
                    + ",".join(input_names)
                )
        else:
            if _is_element_object(elem):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                acc.add(input_names[0], elem)
            except ServingError as exc:
                raise _element_error(index, exc) from None
    return acc.stacked()


def _rows_to_tensors(instances: list, dtypes: Mapping[str, _DType]) -> dict[str, np.ndarray]:
    first = instances[0]
    if not isinstance(first, dict) and len(dtypes) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )
    as_objects = _is_element_object(first)
    if not as_objects and len(dtypes) > 1:
        # TF Serving would feed a list of {"b64": ...} to an arbitrary one of several
        # inputs and fail later; report the real problem instead.
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )
    # Fast path: all rows of an input batched as one value is dense exactly when
    # every row converts and they agree in shape, which is what TF Serving checks.
    if as_objects:
        names = set(dtypes)
        if all(type(e) is dict and e.keys() == names for e in instances):
            fast = {n: _convert_fast([e[n] for e in instances], dtypes[n]) for n in dtypes}
            if all(v is not None for v in fast.values()):
                return fast
    else:
        (name,) = dtypes
        fast_one = _convert_fast(instances, dtypes[name])
        if fast_one is not None:
            return {name: fast_one}
    return _rows_exact(instances, dtypes, as_objects)


def _columns_to_tensors(inputs: object, dtypes: Mapping[str, _DType]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap()."""
    if not isinstance(inputs, dict) or is_base64_object(inputs):
        if len(dtypes) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        (name,) = dtypes
        return {name: _convert_value(inputs, dtypes[name])}
    tensors = {}
    # Keys not in the signature are ignored, as TF Serving does.
    for name in sorted(dtypes):
        if name not in inputs:
            raise InvalidArgument(
                f"Missing named input: {name} in '{kPredictRequestInputsKey}' object."
            )
        tensors[name] = _convert_value(inputs[name], dtypes[name])
    return tensors


def request_to_tensors(req: PredictRequest, specs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Convert a parsed predict request into one ndarray per signature input.

    ``specs`` are the signature's inputs. DT_STRING inputs become object arrays of
    ``bytes``. Only the dense structure and value types are checked (as TF Serving's
    converter does), not the shapes declared in the signature. Raises
    InvalidArgument (or Unimplemented for dtypes JSON cannot express, e.g. DT_HALF)
    with TF Serving's messages.
    """
    if not specs:
        raise InvalidArgument(
            f"Failed to get input map for signature: {req.signature_name or 'DEFAULT'}"
        )
    dtypes = {name: _dtype_for(spec.dtype) for name, spec in specs.items()}
    if req.format == FORMAT_ROW:
        return _rows_to_tensors(req.raw, dtypes)
    if req.format == FORMAT_COLUMNAR:
        return _columns_to_tensors(req.raw, dtypes)
    raise InvalidArgument("Invalid request format")


# ----------------------------------------------------------------- tensor -> JSON

_JSON_OUTPUT_KINDS = frozenset({"number", "int", "bool", "string"})


def _json_string_token(raw: bytes) -> object:
    """A string value as rapidjson writes it: bytes passed through unvalidated."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # orjson only writes valid UTF-8; emit the bytes verbatim as TF Serving does.
        escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        escaped = bytes(
            chain.from_iterable(
                b"\\u%04x" % c if c < 0x20 else bytes((c,)) for c in escaped
            )
        )
        return orjson.Fragment(b'"' + escaped + b'"')


def _as_bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _float_token(value: np.floating) -> object:
    if value != value:
        return _NAN_TOKEN
    if np.isinf(value):
        return _POS_INF_TOKEN if value > 0 else _NEG_INF_TOKEN
    return value


def _map_elements(arr: np.ndarray, fn: Callable[[Any], object]) -> object:
    """Nested lists (or a scalar) of ``fn`` applied to every element of ``arr``."""
    out = np.empty(arr.shape, dtype=object)
    flat_out = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1)):
        flat_out[i] = fn(v)
    return out.tolist() if arr.ndim else out[()]


def _tensor_jsonable(name: str, arr: np.ndarray) -> object:
    """``arr`` in a form orjson serializes the way TF Serving writes the tensor."""
    enum_name = _enum_name_of(arr)
    dtype = _dtype_for(enum_name)
    if dtype.json_kind not in _JSON_OUTPUT_KINDS:
        if arr.size == 0:
            return np.empty(arr.shape).tolist()
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {dtype.tf_name}")
    if dtype.json_kind == "string":
        if name.endswith(kBytesTensorNameSuffix):
            return _map_elements(
                arr, lambda v: {kBase64Key: base64.b64encode(_as_bytes(v)).decode("ascii")}
            )
        return _map_elements(arr, lambda v: _json_string_token(_as_bytes(v)))
    if dtype.json_kind == "number" and not np.isfinite(arr).all():
        return _map_elements(arr, _float_token)
    if arr.ndim == 0:
        return arr[()]
    return np.ascontiguousarray(arr)


def _dumps(obj: object) -> bytes:
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def make_predict_response(
    outputs: dict[str, np.ndarray], fmt: str, output_keys_order: Iterable[str] | None = None
) -> bytes:
    """Serialize predict outputs as TF Serving does (MakeJsonFromTensors).

    Row format gives ``{"predictions": ...}``: for one output the list of its rows,
    for several a list of per-row objects (all outputs must share dim 0). Columnar
    gives ``{"outputs": ...}``: the tensor itself, or an object of tensors.
    ``output_keys_order`` fixes key order (default: ``outputs`` order).
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = list(output_keys_order) if output_keys_order is not None else list(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if fmt == FORMAT_ROW:
        batch_size = None
        for name, arr in arrays.items():
            if arr.ndim == 0:
                raise InvalidArgument(f"Tensor name: {name} has no shape information ")
            if batch_size is not None and arr.shape[0] != batch_size:
                raise InvalidArgument(
                    f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                    f"expecting: {batch_size}"
                )
            batch_size = arr.shape[0]
        values = {name: _tensor_jsonable(name, arr) for name, arr in arrays.items()}
        if len(values) == 1:
            (predictions,) = values.values()
        else:
            predictions = [{name: v[row] for name, v in values.items()} for row in range(batch_size)]
        return _dumps({kPredictResponsePredictionsKey: predictions})
    if fmt == FORMAT_COLUMNAR:
        values = {name: _tensor_jsonable(name, arr) for name, arr in arrays.items()}
        if len(values) == 1:
            (payload,) = values.values()
        else:
            payload = values
        return _dumps({kPredictResponseOutputsKey: payload})
    raise InvalidArgument("Invalid request format")


# ---------------------------------------------------------- classify and regress


def parse_example_body(body: bytes, verb: str) -> tuple[str, dict | None, list[dict]]:
    """Parse a classify/regress body into (signature_name, context, examples).

    Validates exactly as FillClassifyRegressRequestFromJson, including every
    feature value (so errors come out in TF Serving's order); the returned
    context/examples are the JSON objects, ready for examples.build_examples().
    TF Serving words the missing-key error "When method is classify" for both verbs.
    """
    # examples.py imports this module; importing it here avoids the cycle.
    from model_server.examples import check_example

    del verb  # TF Serving's messages do not depend on it
    doc = _parse_json_object(body)
    signature_name = _signature_name(doc)
    context = None
    if kClassifyRegressRequestContextKey in doc:
        context = doc[kClassifyRegressRequestContextKey]
        check_example(context)
    if kClassifyRegressRequestExamplesKey not in doc:
        raise _format_error(
            doc,
            f"When method is classify, key '{kClassifyRegressRequestExamplesKey}' "
            "is expected and was not found",
        )
    examples = doc[kClassifyRegressRequestExamplesKey]
    if not isinstance(examples, list):
        raise _format_error(
            doc, f"Expecting '{kClassifyRegressRequestExamplesKey}' value to be an list/array"
        )
    if not examples:
        raise _format_error(doc, f"'{kClassifyRegressRequestExamplesKey}' value is an empty array")
    for example in examples:
        check_example(example)
    return signature_name, context, examples


def _shape_debug_string(arr: np.ndarray) -> str:
    return _shape_string(arr.shape)


def _check_class_tensor(
    arr: np.ndarray, what: str, enum_name: str, num_examples: int | None
) -> None:
    """Output checks of classifier.cc PostProcessClassificationResult()."""
    if arr.ndim != 2:
        raise InvalidArgument(
            "Expected Tensor shape: [batch_size num_classes] but got "
            + _shape_debug_string(arr)
        )
    if _enum_name_of(arr) != enum_name:
        raise InvalidArgument(f"Expected {what} Tensor of {enum_name}. Got: {_enum_name_of(arr)}")
    if num_examples is not None and arr.shape[0] != num_examples:
        raise InvalidArgument(
            f"Expected {what} output batch size of {num_examples}. Got: {arr.shape[0]}"
        )


def check_classify_outputs(
    classes: np.ndarray | None, scores: np.ndarray | None, num_examples: int | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """classifier.cc's checks of classifier outputs (for REST and gRPC); returns them as arrays.

    ``classes`` is a [batch, n] string tensor, ``scores`` a [batch, n] float32 tensor; either may
    be None. Pass ``num_examples`` to have the batch size checked too.
    """
    if classes is None and scores is None:
        raise InvalidArgument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores".'
        )
    if classes is not None:
        classes = np.asarray(classes)
        _check_class_tensor(classes, "classes", "DT_STRING", num_examples)
    if scores is not None:
        scores = np.asarray(scores)
        _check_class_tensor(scores, "scores", "DT_FLOAT", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    return classes, scores


def make_classify_response(
    classes: np.ndarray | None, scores: np.ndarray | None, num_examples: int | None = None
) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` from classifier outputs.

    ``classes`` is a [batch, n] string tensor, ``scores`` a [batch, n] float32
    tensor; either may be None (label "" / score 0.0, as TF Serving). Pass
    ``num_examples`` to have the batch size checked like classifier.cc.
    """
    classes, scores = check_classify_outputs(classes, scores, num_examples)
    batch, num_classes = (classes if classes is not None else scores).shape
    if batch == 0:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    labels = (
        _map_elements(classes, lambda v: _json_string_token(_as_bytes(v)))
        if classes is not None
        else [[""] * num_classes] * batch
    )
    values = (
        _map_elements(scores, _float_token) if scores is not None else [[0.0] * num_classes] * batch
    )
    results = [
        [[label, score] for label, score in zip(label_row, score_row)]
        for label_row, score_row in zip(labels, values)
    ]
    return _dumps({kClassifyRegressResponseKey: results})


def make_regress_response(values: np.ndarray, num_examples: int | None = None) -> bytes:
    """``{"results": [v, ...]}`` from a [batch] or [batch, 1] float32 regression output."""
    values = check_regress_output(values, num_examples)
    if values.shape[0] == 0:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return _dumps({kClassifyRegressResponseKey: _tensor_jsonable("", values.reshape(-1))})


def check_regress_output(values: np.ndarray, num_examples: int | None = None) -> np.ndarray:
    """regressor.cc's checks of a regression output (for REST and gRPC); returns it as an array."""
    values = np.asarray(values)
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            "but got " + _shape_debug_string(values)
        )
    if num_examples is not None and values.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {values.shape[0]}"
        )
    if _enum_name_of(values) != "DT_FLOAT":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {_enum_name_of(values)}")
    return values
