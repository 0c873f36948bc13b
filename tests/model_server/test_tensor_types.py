"""TF dtype names <-> numpy dtypes, and shapes as TF Serving's messages print them."""

import numpy as np
import pytest

from model_server.tensor_types import dtype_for, enum_name_of, shape_string


@pytest.mark.parametrize(
    "enum_name, np_dtype, json_kind, tf_name",
    [
        ("DT_FLOAT", np.float32, "number", "float"),
        ("DT_DOUBLE", np.float64, "number", "double"),
        ("DT_INT8", np.int8, "int", "int8"),
        ("DT_UINT8", np.uint8, "int", "uint8"),
        ("DT_INT64", np.int64, "int", "int64"),
        ("DT_UINT64", np.uint64, "int", "uint64"),
        ("DT_BOOL", np.bool_, "bool", "bool"),
        ("DT_STRING", object, "string", "string"),
        ("DT_HALF", np.float16, None, "half"),
        ("DT_RESOURCE", object, None, "resource"),  # not in the table: no JSON conversion
    ],
)
def test_dtype_for(enum_name, np_dtype, json_kind, tf_name):
    dtype = dtype_for(enum_name)
    assert (dtype.np_dtype, dtype.json_kind, dtype.tf_name) == (np.dtype(np_dtype), json_kind, tf_name)


@pytest.mark.parametrize(
    "array, enum_name",
    [
        (np.zeros(1, np.float32), "DT_FLOAT"),
        (np.zeros(1, np.int32), "DT_INT32"),
        (np.zeros(1, np.uint16), "DT_UINT16"),
        (np.zeros(1, np.bool_), "DT_BOOL"),
        (np.zeros(1, np.complex64), "DT_COMPLEX64"),
        (np.array([b"a"], dtype=object), "DT_STRING"),
        (np.array([b"a"]), "DT_STRING"),
        (np.array(["a"]), "DT_STRING"),
    ],
)
def test_enum_name_of(array, enum_name):
    assert enum_name_of(array) == enum_name


def test_shape_string():
    assert shape_string((2, 3)) == "[2,3]"
    assert shape_string(()) == "[]"
