"""Predict bodies of TF Serving's REST API: JSON -> tensors and tensors -> JSON (numpy, no TensorFlow).

Behaviour, messages and error codes follow ``tensorflow_serving/util/json_tensor.cc``:
a request carries ``"instances"`` (row format) or ``"inputs"`` (columnar); tensors are built
with the same dense-shape rules, DT_STRING inputs take ``{"b64": ...}`` values; responses
mirror the request format, with ``{"b64": ...}`` for ``*_bytes`` outputs. The JSON text
itself (lenient parsing, quoting, NaN tokens) is json_text's job.

Conversion has a fast path (C-level flattening and numpy) that only ever succeeds;
whenever it cannot prove a value valid it defers to the exact path, which walks the
value like json_tensor.cc does so the first error reported is TF Serving's.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from model_server.errors import InvalidArgument, ServingError, Unimplemented
from model_server.json_text import (decode_base64_object, float_token, format_value, is_base64_object,
                                    json_type_name, json_value_error, kBase64Key, parse_json_object,
                                    read_signature_name, string_token, write_json)
from model_server.tensor_types import DType, TensorSpec, dtype_for, enum_name_of, shape_string

# JSON keys, named as in json_tensor.cc.
kPredictRequestInstancesKey = "instances"
kPredictRequestInputsKey = "inputs"
kPredictResponsePredictionsKey = "predictions"
kPredictResponseOutputsKey = "outputs"
kBytesTensorNameSuffix = "_bytes"

FORMAT_ROW = "row"
FORMAT_COLUMNAR = "columnar"


@dataclass
class PredictRequest:
    """A syntactically valid predict body, before conversion against a signature.

    ``signature_name`` is "" when absent (caller uses "serving_default"); ``format``
    is "row" (``instances``) or "columnar" (``inputs``); ``raw`` is that key's value.
    """

    signature_name: str
    format: str
    raw: object


# ------------------------------------------------------------------ request envelope


def parse_predict_body(body: bytes) -> PredictRequest:
    """Parse and check the envelope of a predict request body.

    Raises InvalidArgument with TF Serving's messages for malformed JSON, a
    non-object document, a non-string signature_name, both or neither of
    "instances"/"inputs", a non-list or empty "instances".
    """
    doc = parse_json_object(body)
    signature_name = read_signature_name(doc)
    has_instances = kPredictRequestInstancesKey in doc
    has_inputs = kPredictRequestInputsKey in doc
    if has_instances and has_inputs:
        raise json_value_error(
            doc,
            "Not formatted correctly expecting only one of "
            f"'{kPredictRequestInputsKey}' or '{kPredictRequestInstancesKey}' keys to exist ",
        )
    if has_instances:
        instances = doc[kPredictRequestInstancesKey]
        if not isinstance(instances, list):
            raise json_value_error(doc, f"Expecting '{kPredictRequestInstancesKey}' to be an list/array")
        if not instances:
            raise json_value_error(doc, f"No values in '{kPredictRequestInstancesKey}' array")
        return PredictRequest(signature_name, FORMAT_ROW, instances)
    if has_inputs:
        return PredictRequest(signature_name, FORMAT_COLUMNAR, doc[kPredictRequestInputsKey])
    raise InvalidArgument(
        f"Missing '{kPredictRequestInputsKey}' or '{kPredictRequestInstancesKey}' key"
    )


# ------------------------------------------------------------------ JSON -> tensor


def _utf8_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Invalid UTF-8 from the lenient parser or a lone \uD800 escape:
        # hand the model the bytes the client sent, as rapidjson would.
        return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass")


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _type_error(val: object, dtype: DType) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {format_value(val)} Type: {json_type_name(val)} "
        f"is not of expected type: {dtype.tf_name}"
    )


def _leaf_value(val: object, dtype: DType) -> object:
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


def _to_array(flat: list, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
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


def _fast_leaves(leaves: list, dtype: DType) -> list | np.ndarray | None:
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


def _convert_fast(val: object, dtype: DType) -> np.ndarray | None:
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


def _fill_exact(val: object, level: int, shape: tuple[int, ...], dtype: DType, out: list) -> None:
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


def _convert_value(val: object, dtype: DType) -> np.ndarray:
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


def _is_element_object(val: object) -> bool:
    return isinstance(val, dict) and not is_base64_object(val)


class _RowAccumulator:
    """AddInstanceItem(): per-input tensors of one "instances" list, checked alike."""

    def __init__(self, dtypes: Mapping[str, DType]) -> None:
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
                    f"Expecting shape {shape_string(expected.shape)} "
                    f"but got: {shape_string(tensor.shape)}"
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


def _rows_exact(instances: list, dtypes: Mapping[str, DType], as_objects: bool) -> dict[str, np.ndarray]:
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


def _rows_to_tensors(instances: list, dtypes: Mapping[str, DType]) -> dict[str, np.ndarray]:
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


def _columns_to_tensors(inputs: object, dtypes: Mapping[str, DType]) -> dict[str, np.ndarray]:
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
    dtypes = {name: dtype_for(spec.dtype) for name, spec in specs.items()}
    if req.format == FORMAT_ROW:
        return _rows_to_tensors(req.raw, dtypes)
    if req.format == FORMAT_COLUMNAR:
        return _columns_to_tensors(req.raw, dtypes)
    raise InvalidArgument("Invalid request format")


# ----------------------------------------------------------------- tensor -> JSON

_JSON_OUTPUT_KINDS = frozenset({"number", "int", "bool", "string"})


def _as_bytes(value: object) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _map_elements(arr: np.ndarray, fn: Callable[[Any], object]) -> object:
    """Nested lists (or a scalar) of ``fn`` applied to every element of ``arr``."""
    out = np.empty(arr.shape, dtype=object)
    flat_out = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1)):
        flat_out[i] = fn(v)
    return out.tolist() if arr.ndim else out[()]


def tensor_json_value(name: str, arr: np.ndarray) -> object:
    """One tensor as a value ``write_json`` writes the way TF Serving writes that tensor.

    Named ``*_bytes`` string tensors become ``{"b64": ...}`` objects, other strings
    raw bytes, non-finite floats NaN / Infinity tokens. Raises InvalidArgument for
    dtypes JSON cannot express (unless the tensor is empty).
    """
    enum_name = enum_name_of(arr)
    dtype = dtype_for(enum_name)
    if dtype.json_kind not in _JSON_OUTPUT_KINDS:
        if arr.size == 0:
            return np.empty(arr.shape).tolist()
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {dtype.tf_name}")
    if dtype.json_kind == "string":
        if name.endswith(kBytesTensorNameSuffix):
            return _map_elements(
                arr, lambda v: {kBase64Key: base64.b64encode(_as_bytes(v)).decode("ascii")}
            )
        return _map_elements(arr, lambda v: string_token(_as_bytes(v)))
    if dtype.json_kind == "number" and not np.isfinite(arr).all():
        return _map_elements(arr, float_token)
    if arr.ndim == 0:
        return arr[()]
    return np.ascontiguousarray(arr)


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
        values = {name: tensor_json_value(name, arr) for name, arr in arrays.items()}
        if len(values) == 1:
            (predictions,) = values.values()
        else:
            predictions = [{name: v[row] for name, v in values.items()} for row in range(batch_size)]
        return write_json({kPredictResponsePredictionsKey: predictions})
    if fmt == FORMAT_COLUMNAR:
        values = {name: tensor_json_value(name, arr) for name, arr in arrays.items()}
        if len(values) == 1:
            (payload,) = values.values()
        else:
            payload = values
        return write_json({kPredictResponseOutputsKey: payload})
    raise InvalidArgument("Invalid request format")
