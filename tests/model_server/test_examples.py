"""Example building: feature rules from json_tensor.cc, bytes checked against the proto schema.

The schema is declared here with descriptor_pb2 (field numbers of
tensorflow/core/example/{feature,example}.proto) so the test never imports TensorFlow.
"""

import math

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from model_server import errors
from model_server.examples import build_examples

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


def decode(data: bytes) -> dict:
    ex = Example.FromString(data)
    out = {}
    for name, feature in ex.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value)) if kind else (None, [])
    return out


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
