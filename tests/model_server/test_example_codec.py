"""Classify/regress codec tests: bodies and feature rules from json_tensor.cc, Example bytes checked
against the proto schema, results as classifier.cc / regressor.cc write them.

The schema is declared here with descriptor_pb2 (field numbers of
tensorflow/core/example/{feature,example}.proto) so the test never imports TensorFlow.
"""

import json
import math

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from model_server import errors
from model_server.example_codec import (build_examples, make_classify_response, make_regress_response,
                                        parse_example_body)
from tests.support.serving_errors import error_message

_F = descriptor_pb2.FieldDescriptorProto


def _example_class():
    fdp = descriptor_pb2.FileDescriptorProto(name="test_example.proto", package="t", syntax="proto3")

    def message(name, *fields, nested=(), oneof=None):
        msg = fdp.message_type.add(name=name)
        if oneof:
            msg.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof:
                f.oneof_index = 0
        for n in nested:
            msg.nested_type.add().CopyFrom(n)
        return msg

    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, _F.TYPE_BYTES, rep, None))
    message("FloatList", ("value", 1, _F.TYPE_FLOAT, rep, None))
    message("Int64List", ("value", 1, _F.TYPE_INT64, rep, None))
    message(
        "Feature",
        ("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".t.BytesList"),
        ("float_list", 2, _F.TYPE_MESSAGE, opt, ".t.FloatList"),
        ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".t.Int64List"),
        oneof="kind",
    )
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt, type_name=".t.Feature")
    entry.options.map_entry = True
    message("Features", ("feature", 1, _F.TYPE_MESSAGE, rep, ".t.Features.FeatureEntry"), nested=[entry])
    message("Example", ("features", 1, _F.TYPE_MESSAGE, opt, ".t.Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Example"))


Example = _example_class()


def loads(data: bytes):
    # Python's json accepts the NaN/Infinity tokens TF Serving writes.
    return json.loads(data)


def decode(data: bytes) -> dict:
    ex = Example.FromString(data)
    out = {}
    for name, feature in ex.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value)) if kind else (None, [])
    return out


# ------------------------------------------------------------------ Example protos


@pytest.mark.parametrize(
    "example, expected",
    [
        ({"i": 5}, {"i": ("int64_list", [5])}),
        ({"i": [1, -2, 2**63 - 1, -(2**63)]}, {"i": ("int64_list", [1, -2, 2**63 - 1, -(2**63)])}),
        ({"b": [True, False]}, {"b": ("int64_list", [1, 0])}),
        ({"f": [1.5, 0.25]}, {"f": ("float_list", [1.5, 0.25])}),
        ({"f": 1.0}, {"f": ("float_list", [1.0])}),
        ({"s": ["a", "é"]}, {"s": ("bytes_list", [b"a", "é".encode()])}),
        ({"s": [{"b64": "AP8="}, "x"]}, {"s": ("bytes_list", [b"\x00\xff", b"x"])}),
        ({"e": []}, {"e": (None, [])}),
        ({}, {}),
        ({"big": 2**64}, {"big": ("float_list", [float(2**64)])}),  # rapidjson reads it as a double
    ],
)
def test_feature_kinds(example, expected):
    (data,) = build_examples(None, [example])
    assert decode(data) == expected


def test_float_overflow_and_nan():
    (data,) = build_examples(None, [{"f": [1e300, float("nan")]}])
    kind, values = decode(data)["f"]
    assert kind == "float_list" and values[0] == math.inf and math.isnan(values[1])


def test_context_is_merged_and_examples_win():
    context = {"lang": "en", "shared": [1, 2]}
    data = build_examples(context, [{"x": 1.5}, {"x": 2.5, "shared": "override"}])
    assert [decode(d) for d in data] == [
        {"lang": ("bytes_list", [b"en"]), "shared": ("int64_list", [1, 2]), "x": ("float_list", [1.5])},
        {"lang": ("bytes_list", [b"en"]), "shared": ("bytes_list", [b"override"]), "x": ("float_list", [2.5])},
    ]


def test_serialization_is_deterministic():
    assert build_examples(None, [{"b": 1, "a": 2}]) == build_examples(None, [{"a": 2, "b": 1}])


@pytest.mark.parametrize(
    "context, example, message",
    [
        (None, 5, "Example must be JSON object but got JSON Number"),
        (None, "s", "Example must be JSON object but got JSON String"),
        ([], {}, "Example must be JSON object but got JSON Array"),
        (None, {"n": None}, "Feature: n has element with unexpected JSON type: Null"),
        (None, {"n": [None]}, "Feature: n has element with unexpected JSON type: Null"),
        (None, {"n": {"x": 1}}, "Feature: n has element with unexpected JSON type: Object"),
        (None, {"n": [[1]]}, "Feature: n has element with unexpected JSON type: Array"),
        (None, {"n": [1, 1.5]}, "Unexpected element type in feature: n expecting type: int64"),
        (None, {"n": [1.5, "a"]}, "Unexpected element type in feature: n expecting type: float"),
        (None, {"n": ["a", True]}, "Unexpected element type in feature: n expecting type: bytes"),
        (None, {"n": [{"b64": "YQ=="}, 1]}, "expecting type: bytes"),
        (None, {"n": [2**63]}, "Feature: n has uint64_t element. Only int64_t is supported."),
        (None, {"n": {"b64": "*"}}, "Unable to base64 decode"),
        (None, {"n": [1, {"b64": "*"}]}, "expecting type: int64"),  # kind checked before decoding
        ({"c": None}, {}, "Feature: c has element with unexpected JSON type: Null"),
    ],
)
def test_errors(context, example, message):
    with pytest.raises(errors.InvalidArgument) as info:
        build_examples(context, [example])
    assert message in str(info.value)



# ------------------------------------------------------------- classify / regress


def test_parse_example_body():
    body = b"""{"signature_name": "sig", "context": {"lang": "en"},
               "examples": [{"x": [1, 2]}, {"x": 3.5, "b": {"b64": "YQ=="}}]}"""
    assert parse_example_body(body, "classify") == ("sig", {"lang": "en"}, [{"x": [1, 2]}, {"x": 3.5, "b": {"b64": "YQ=="}}])
    assert parse_example_body(b'{"examples": [{}]}', "regress") == ("", None, [{}])


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "The document is empty"),
        (b"[]", "Is not object"),
        (b'{"signature_name": 1, "examples": [{}]}', "'signature_name' key must be a string"),
        (b'{"context": [1], "examples": [{}]}', "Example must be JSON object but got JSON Array"),
        (b'{"context": {"a": null}}', "Feature: a has element with unexpected JSON type: Null"),
        (b'{"signature_name": "s"}', "When method is classify, key 'examples' is expected and was not found"),
        (b'{"examples": {}}', "Expecting 'examples' value to be an list/array"),
        (b'{"examples": []}', "'examples' value is an empty array"),
        (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (b'{"examples": [{"names": null}]}', "names has element with unexpected JSON type: Null"),
        (b'{"examples": [{"names": [1, "a"]}]}', "Unexpected element type in feature: names expecting type: int64"),
        (b'{"examples": [{"names": ["a", 1.5]}]}', "feature: names expecting type: bytes"),
        (b'{"examples": [{"names": [1.5, true]}]}', "feature: names expecting type: float"),
        (b'{"examples": [{"names": {"a": 1}}]}', "names has element with unexpected JSON type: Object"),
        (b'{"examples": [{"names": [[1]]}]}', "names has element with unexpected JSON type: Array"),
        (b'{"examples": [{"names": 18446744073709551615}]}', "Feature: names has uint64_t element. Only int64_t is supported."),
        (b'{"examples": [{"names": {"b64": "#"}}]}', "Unable to base64 decode"),
    ],
)
def test_parse_example_body_errors(body, message):
    assert message in error_message(parse_example_body, body, "regress")


def test_classify_response():
    classes = np.array([[b"cat", b"dog"], [b"x", b"y"]], dtype=object)
    scores = np.array([[0.3, 0.7], [np.nan, 0.1]], dtype=np.float32)
    assert make_classify_response(classes, scores) == (
        b'{"results":[[["cat",0.3],["dog",0.7]],[["x",NaN],["y",0.1]]]}'
    )
    assert loads(make_classify_response(None, scores[:1])) == {"results": [[["", 0.3], ["", 0.7]]]}
    assert loads(make_classify_response(classes[:1], None)) == {"results": [[["cat", 0.0], ["dog", 0.0]]]}


@pytest.mark.parametrize(
    "classes, scores, num_examples, message",
    [
        (None, None, None, 'at least one of "classes" or "scores"'),
        (np.array([b"a"], object), None, None, "Expected Tensor shape: [batch_size num_classes] but got [1]"),
        (np.array([[1]], np.int32), None, None, "Expected classes Tensor of DT_STRING. Got: DT_INT32"),
        (None, np.array([[1.0]], np.float64), None, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        (np.array([[b"a"]], object), None, 2, "Expected classes output batch size of 2. Got: 1"),
        (None, np.zeros((1, 1, 1), np.float32), None, "Expected Tensor shape: [batch_size num_classes] but got [1,1,1]"),
        (None, np.zeros((1, 2), np.float32), 3, "Expected scores output batch size of 3. Got: 1"),
        (np.array([[b"a"]], object), np.zeros((1, 2), np.float32), None, "Tensors class and score should match in dim_size(1). Got 1 vs. 2"),
        (None, np.zeros((0, 2), np.float32), None, "Cannot convert empty ClassificationResults to JSON"),
    ],
)
def test_classify_response_errors(classes, scores, num_examples, message):
    assert message in error_message(make_classify_response, classes, scores, num_examples)


def test_regress_response():
    assert make_regress_response(np.array([0.2, 0.9, 1.0], np.float32)) == b'{"results":[0.2,0.9,1.0]}'
    values = np.array([[0.2], [np.inf], [1.0], [-np.inf], [np.nan]], np.float32)
    assert make_regress_response(values) == b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'


@pytest.mark.parametrize(
    "values, num_examples, message",
    [
        (np.zeros((2, 2), np.float32), None, "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]"),
        (np.float32(1), None, "but got []"),
        (np.zeros(2, np.float32), 3, "Input batch size did not match output batch size: 3 vs. 2"),
        (np.zeros(2, np.float64), None, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
        (np.zeros(0, np.float32), None, "Cannot convert empty RegressionResults to JSON"),
    ],
)
def test_regress_response_errors(values, num_examples, message):
    assert message in error_message(make_regress_response, values, num_examples)
