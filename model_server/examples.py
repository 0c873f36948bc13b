"""JSON examples -> serialized ``tf.train.Example`` protos, per TF Serving's rules.

Feature rules follow AddValueToFeature() in ``util/json_tensor.cc``: a feature is
one value or a flat list of values; ints and booleans go to int64_list, other
numbers to float_list, strings and ``{"b64": ...}`` to bytes_list, and one feature
cannot mix kinds. The protos are written directly in protobuf wire format (a few
lines) so building them never imports TensorFlow; ``tests/model_server`` checks the
bytes against the Example schema.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from model_server.codec import decode_base64_object, is_base64_object, json_type_name
from model_server.errors import InvalidArgument

# Feature kinds, named as IncompatibleFeatureKindError() prints them.
KIND_BYTES = "bytes"
KIND_FLOAT = "float"
KIND_INT64 = "int64"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

# Field numbers from tensorflow/core/example/{example,feature}.proto.
_EXAMPLE_FEATURES = 1
_FEATURES_FEATURE_MAP = 1
_MAP_ENTRY_KEY = 1
_MAP_ENTRY_VALUE = 2
_FEATURE_FIELD_BY_KIND = {KIND_BYTES: 1, KIND_FLOAT: 2, KIND_INT64: 3}
_LIST_VALUE = 1
_WIRE_LEN = 2

# feature name -> (kind, values); kind None is an empty feature (from "[]").
Features = dict[str, tuple[str | None, list]]


def _unexpected_type(name: str, val: object) -> InvalidArgument:
    return InvalidArgument(
        f"Feature: {name} has element with unexpected JSON type: {json_type_name(val)}"
    )


def _classify(name: str, val: object) -> tuple[str, object]:
    """Kind and proto value of one feature element (AddValueToFeature's switch)."""
    t = type(val)
    if t is bool:
        return KIND_INT64, int(val)
    if t is str:
        return KIND_BYTES, val.encode("utf-8", "surrogateescape")
    if t is float:
        return KIND_FLOAT, val
    if t is int:
        if _INT64_MIN <= val <= _INT64_MAX:
            return KIND_INT64, val
        if 0 <= val <= _UINT64_MAX:
            raise InvalidArgument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        return KIND_FLOAT, float(val)  # rapidjson reads wider integers as doubles
    if t is dict and is_base64_object(val):
        return KIND_BYTES, val  # decoded after the kind check, in TF Serving's order
    raise _unexpected_type(name, val)


def _feature(name: str, content: object) -> tuple[str | None, list]:
    kind: str | None = None
    values: list = []
    for val in content if isinstance(content, list) else (content,):
        val_kind, value = _classify(name, val)
        if kind is not None and val_kind != kind:
            raise InvalidArgument(
                f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        kind = val_kind
        values.append(decode_base64_object(value) if type(value) is dict else value)
    return kind, values


def check_example(obj: object) -> Features:
    """Validate one JSON example (MakeExampleFromJsonObject) and return its features."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type_name(obj)}")
    return {name: _feature(name, content) for name, content in obj.items()}


# ----------------------------------------------------------------- wire format


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 -> ten-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | _WIRE_LEN) + _varint(len(payload)) + payload


def _list_payload(kind: str, values: list) -> bytes:
    if kind == KIND_BYTES:
        return b"".join(_len_field(_LIST_VALUE, v) for v in values)
    if not values:
        return b""
    if kind == KIND_FLOAT:
        with np.errstate(over="ignore"):
            packed = np.asarray(values, dtype=np.float64).astype("<f4").tobytes()
    else:
        packed = b"".join(map(_varint, values))
    return _len_field(_LIST_VALUE, packed)


def _feature_bytes(kind: str | None, values: list) -> bytes:
    if kind is None:
        return b""
    return _len_field(_FEATURE_FIELD_BY_KIND[kind], _list_payload(kind, values))


def serialize_example(features: Features) -> bytes:
    """Wire-format ``tf.train.Example`` with map entries in sorted key order."""
    entries = b"".join(
        _len_field(
            _FEATURES_FEATURE_MAP,
            _len_field(_MAP_ENTRY_KEY, name.encode("utf-8", "surrogateescape"))
            + _len_field(_MAP_ENTRY_VALUE, _feature_bytes(*features[name])),
        )
        for name in sorted(features)
    )
    return _len_field(_EXAMPLE_FEATURES, entries)


def build_examples(context: dict | None, examples: Iterable[dict]) -> list[bytes]:
    """One serialized Example per JSON example, with ``context`` features merged in.

    TF Serving feeds ExampleListWithContext to the model as context bytes followed
    by example bytes, i.e. a protobuf merge where an example's feature replaces a
    context feature of the same name; the result here is that merge.
    Raises InvalidArgument with TF Serving's messages for invalid features.
    """
    base = check_example(context) if context is not None else {}
    return [serialize_example({**base, **check_example(example)}) for example in examples]
