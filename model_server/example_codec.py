"""Classify and regress bodies of TF Serving's REST API: JSON examples in, results out.

A request's ``"context"`` and ``"examples"`` become serialized ``tf.train.Example`` protos;
feature rules follow AddValueToFeature() in ``tensorflow_serving/util/json_tensor.cc``:
a feature is one value or a flat list of values; ints and booleans go to int64_list, other
numbers to float_list, strings and ``{"b64": ...}`` to bytes_list, and one feature cannot mix
kinds. The protos are written directly in protobuf wire format (a few lines) so building them
never imports TensorFlow; ``tests/model_server`` checks the bytes against the Example schema.
Results are written as ``{"results": ...}`` after classifier.cc / regressor.cc's output checks.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from model_server.errors import InvalidArgument
from model_server.json_text import (decode_base64_object, is_base64_object, json_type_name, json_value_error,
                                    parse_json_object, read_signature_name, write_json)
from model_server.predict_codec import tensor_json_value
from model_server.tensor_types import enum_name_of, shape_string
from serving_contract.protobuf_wire import len_field, varint

# JSON keys, named as in json_tensor.cc.
kClassifyRegressRequestContextKey = "context"
kClassifyRegressRequestExamplesKey = "examples"
# api_rest.md says "result" but json_tensor.cc (what clients actually get) writes "results".
kClassifyRegressResponseKey = "results"

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


def _list_payload(kind: str, values: list) -> bytes:
    if kind == KIND_BYTES:
        return b"".join(len_field(_LIST_VALUE, v) for v in values)
    if not values:
        return b""
    if kind == KIND_FLOAT:
        with np.errstate(over="ignore"):
            packed = np.asarray(values, dtype=np.float64).astype("<f4").tobytes()
    else:
        packed = b"".join(map(varint, values))
    return len_field(_LIST_VALUE, packed)


def _feature_bytes(kind: str | None, values: list) -> bytes:
    if kind is None:
        return b""
    return len_field(_FEATURE_FIELD_BY_KIND[kind], _list_payload(kind, values))


def serialize_example(features: Features) -> bytes:
    """Wire-format ``tf.train.Example`` with map entries in sorted key order."""
    entries = b"".join(
        len_field(
            _FEATURES_FEATURE_MAP,
            len_field(_MAP_ENTRY_KEY, name.encode("utf-8", "surrogateescape"))
            + len_field(_MAP_ENTRY_VALUE, _feature_bytes(*features[name])),
        )
        for name in sorted(features)
    )
    return len_field(_EXAMPLE_FEATURES, entries)


def build_examples(context: dict | None, examples: Iterable[dict]) -> list[bytes]:
    """One serialized Example per JSON example, with ``context`` features merged in.

    TF Serving feeds ExampleListWithContext to the model as context bytes followed
    by example bytes, i.e. a protobuf merge where an example's feature replaces a
    context feature of the same name; the result here is that merge.
    Raises InvalidArgument with TF Serving's messages for invalid features.
    """
    base = check_example(context) if context is not None else {}
    return [serialize_example({**base, **check_example(example)}) for example in examples]


# ------------------------------------------------------------------ request body


def examples_of_input(request_input: object) -> np.ndarray:
    """A ``tensorflow.serving.Input`` proto (gRPC requests, warm-up logs) as the string tensor of
    serialized Examples that classify and regress signatures take, as util.cc
    InputToSerializedExampleTensor builds it.

    With a context, each example is the context's bytes followed by the example's: parsing that
    is a protobuf merge, so an example's feature replaces the context's feature of the same name.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise InvalidArgument("Input is empty.")
    return np.array(serialized, dtype=object)


def parse_example_body(body: bytes, verb: str) -> tuple[str, dict | None, list[dict]]:
    """Parse a classify/regress body into (signature_name, context, examples).

    Validates exactly as FillClassifyRegressRequestFromJson, including every
    feature value (so errors come out in TF Serving's order); the returned
    context/examples are the JSON objects, ready for build_examples().
    TF Serving words the missing-key error "When method is classify" for both verbs.
    """
    del verb  # TF Serving's messages do not depend on it
    doc = parse_json_object(body)
    signature_name = read_signature_name(doc)
    context = None
    if kClassifyRegressRequestContextKey in doc:
        context = doc[kClassifyRegressRequestContextKey]
        check_example(context)
    if kClassifyRegressRequestExamplesKey not in doc:
        raise json_value_error(
            doc,
            f"When method is classify, key '{kClassifyRegressRequestExamplesKey}' "
            "is expected and was not found",
        )
    examples = doc[kClassifyRegressRequestExamplesKey]
    if not isinstance(examples, list):
        raise json_value_error(
            doc, f"Expecting '{kClassifyRegressRequestExamplesKey}' value to be an list/array"
        )
    if not examples:
        raise json_value_error(doc, f"'{kClassifyRegressRequestExamplesKey}' value is an empty array")
    for example in examples:
        check_example(example)
    return signature_name, context, examples


# ----------------------------------------------------------------------- results


def _check_class_tensor(
    arr: np.ndarray, what: str, enum_name: str, num_examples: int | None
) -> None:
    """Output checks of classifier.cc PostProcessClassificationResult()."""
    if arr.ndim != 2:
        raise InvalidArgument(
            "Expected Tensor shape: [batch_size num_classes] but got "
            + shape_string(arr.shape)
        )
    if enum_name_of(arr) != enum_name:
        raise InvalidArgument(f"Expected {what} Tensor of {enum_name}. Got: {enum_name_of(arr)}")
    if num_examples is not None and arr.shape[0] != num_examples:
        raise InvalidArgument(
            f"Expected {what} output batch size of {num_examples}. Got: {arr.shape[0]}"
        )


def check_classify_outputs(
    classes: np.ndarray | None, scores: np.ndarray | None, num_examples: int | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """classifier.cc's checks of classifier outputs (REST and gRPC); returns them as arrays.

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
    labels = tensor_json_value("classes", classes) if classes is not None else [[""] * num_classes] * batch
    values = tensor_json_value("scores", scores) if scores is not None else [[0.0] * num_classes] * batch
    results = [
        [[label, score] for label, score in zip(label_row, score_row)]
        for label_row, score_row in zip(labels, values)
    ]
    return write_json({kClassifyRegressResponseKey: results})


def make_regress_response(values: np.ndarray, num_examples: int | None = None) -> bytes:
    """``{"results": [v, ...]}`` from a [batch] or [batch, 1] float32 regression output."""
    values = check_regress_output(values, num_examples)
    if values.shape[0] == 0:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return write_json({kClassifyRegressResponseKey: tensor_json_value("", values.reshape(-1))})


def check_regress_output(values: np.ndarray, num_examples: int | None = None) -> np.ndarray:
    """regressor.cc's checks of a regression output (REST and gRPC); returns it as an array."""
    values = np.asarray(values)
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            "but got " + shape_string(values.shape)
        )
    if num_examples is not None and values.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {values.shape[0]}"
        )
    if enum_name_of(values) != "DT_FLOAT":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {enum_name_of(values)}")
    return values
