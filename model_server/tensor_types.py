"""TensorFlow's tensor types without TensorFlow: dtype enum names, their numpy dtypes, shapes.

The one table of which TF dtypes exist, which numpy dtype holds each and how JSON values
convert to it (``AddValueToTensor``'s switch in ``tensorflow_serving/util/json_tensor.cc``).
Used by the servables (signature specs) and by every wire codec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Signature input: TF dtype enum name (e.g. "DT_FLOAT") and shape (None = unknown rank)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class DType:
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
_DTYPES: dict[str, DType] = {
    d.enum_name: d
    for d in (
        DType("DT_FLOAT", np.dtype(np.float32), "number"),
        DType("DT_DOUBLE", np.dtype(np.float64), "number"),
        # JSON accepts any int32 for these; narrowing wraps like TF's int_val cast.
        DType("DT_INT32", np.dtype(np.int32), "int", _INT32),
        DType("DT_INT16", np.dtype(np.int16), "int", _INT32),
        DType("DT_INT8", np.dtype(np.int8), "int", _INT32),
        DType("DT_UINT8", np.dtype(np.uint8), "int", _INT32),
        DType("DT_INT64", np.dtype(np.int64), "int", (-(2**63), 2**63 - 1)),
        DType("DT_UINT32", np.dtype(np.uint32), "int", (0, 2**32 - 1)),
        DType("DT_UINT64", np.dtype(np.uint64), "int", (0, 2**64 - 1)),
        DType("DT_BOOL", np.dtype(np.bool_), "bool"),
        DType("DT_STRING", np.dtype(object), "string"),
        # json_tensor.cc has no JSON conversion for these (UNIMPLEMENTED on input,
        # INVALID_ARGUMENT on output); the numpy dtype only serves empty tensors.
        DType("DT_HALF", np.dtype(np.float16), None),
        DType("DT_UINT16", np.dtype(np.uint16), None),
        DType("DT_COMPLEX64", np.dtype(np.complex64), None),
        DType("DT_COMPLEX128", np.dtype(np.complex128), None),
    )
}


def dtype_for(enum_name: str) -> DType:
    """The DType of a TF enum name; unknown names (e.g. DT_RESOURCE) get no JSON conversion."""
    known = _DTYPES.get(enum_name)
    return known if known is not None else DType(enum_name, np.dtype(object), None)


def enum_name_of(arr: np.ndarray) -> str:
    """TF enum name of a numpy array's dtype (string arrays are DT_STRING)."""
    if arr.dtype.kind in "OSU":
        return "DT_STRING"
    for d in _DTYPES.values():
        if d.np_dtype == arr.dtype and d.json_kind != "string":
            return d.enum_name
    return "DT_" + arr.dtype.name.upper()


def shape_string(shape: tuple[int, ...]) -> str:
    """A shape as TF Serving's messages print it, e.g. "[2,3]" ("[]" for a scalar)."""
    return "[" + ",".join(map(str, shape)) + "]"
