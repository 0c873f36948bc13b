"""JSON text tests: rapidjson's parse errors, quoting in messages, {"b64": ...} values (json_tensor_test.cc)."""

import base64

import pytest

from model_server import errors, json_text
from model_server.json_text import (decode_base64_object, format_value, json_type_name, parse_json_object,
                                    read_signature_name)
from tests.support.serving_errors import error_message


# ---------------------------------------------------------------- parse_json_object


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
        (b'{"instances": [1,}', "JSON Parse error: Invalid value."),
        (b'{"instances": [1 2]}', "Missing a comma or ']' after an array element."),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member."),
        (b'{"a" 1}', "Missing a colon after a name of object member."),
        (b"{1: 2}", "Missing a name for object member."),
        (b'{"a": "x', "Missing a closing quotation mark in string."),
        (b'{"a": "\\q"}', "Invalid escape character in string."),
        (b'{"a": "\\u12g4"}', "Incorrect hex digit after \\u escape in string."),
        (b'{"a": "\x01"}', "Invalid encoding in string."),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b'"s"', 'JSON Value: "s" Is not object'),
    ],
)
def test_parse_json_object_errors(body, message):
    assert message in error_message(parse_json_object, body)


def test_trailing_bytes_are_ignored():
    # rapidjson stops when the document is done (kParseStopWhenDoneFlag).
    assert parse_json_object(b'{"instances": [[1,2],[3,4],[5,6]]}X') == {"instances": [[1, 2], [3, 4], [5, 6]]}


def test_nan_and_infinity_tokens():
    values = parse_json_object(b'{"a": [1.0, NaN, Infinity, -Infinity]}')["a"]
    assert values[0] == 1.0 and values[1] != values[1] and values[2:] == [float("inf"), float("-inf")]


@pytest.mark.parametrize(
    "value, name",
    [(None, "Null"), (True, "True"), (False, "False"), ({}, "Object"), ([], "Array"), ("s", "String"),
     (1, "Number"), (1.5, "Number")],
)
def test_json_type_name(value, name):
    assert json_type_name(value) == name


def test_signature_name():
    assert read_signature_name({}) == ""
    assert read_signature_name({"signature_name": "s"}) == "s"
    message = error_message(read_signature_name, {"signature_name": [1], "instances": [1]})
    assert message.startswith('JSON Value: {\n    "signature_name": [1],')
    assert message.endswith("'signature_name' key must be a string value.")


# ------------------------------------------------------------------------ base64


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"b64": "YQ"}, b"a"),
        ({"b64": "YQ=="}, b"a"),
        ({"b64": ""}, b""),
        ({"b64": "YQ==", "x": 1}, "not formatted correctly for base64 data"),
        ({"b64": 5}, "not formatted correctly for base64 data"),
        ("YQ==", "not formatted correctly for base64 data"),
        ({"b64": "Y"}, "Unable to base64 decode"),
        ({"b64": "Y=Q="}, "Unable to base64 decode"),
    ],
)
def test_decode_base64_object(value, expected):
    if isinstance(expected, bytes):
        assert decode_base64_object(value) == expected
    else:
        assert expected in error_message(decode_base64_object, value)


_B64_CASES = ["", "YQ", "YQ=", "YQ==", "QUJD", "QUJD==", "QUJDRA", "Y", "Y=Q=", "!!!!", "YQ==YQ==", "Y Q=",
              "YQ\n", "=YQ=", "YQ-_", "aé==", base64.b64encode(bytes(range(256)) * 40).decode()]


def _decode_or_error(b64: str) -> bytes | str:
    try:
        return json_text.decode_base64_object({"b64": b64})
    except errors.InvalidArgument as exc:
        return str(exc)


@pytest.mark.parametrize("b64", _B64_CASES)
def test_base64_accelerator_never_changes_answers(monkeypatch, b64):
    """The optional SIMD decoder (pybase64) must answer exactly as binascii alone, errors included."""
    monkeypatch.setattr(json_text, "_simd_b64decode", None)
    expected = _decode_or_error(b64)

    def always_refuses(text, validate):
        raise ValueError("stricter than binascii")

    # A decoder that refuses must fall back to binascii, not turn valid input into an error.
    monkeypatch.setattr(json_text, "_simd_b64decode", always_refuses)
    assert _decode_or_error(b64) == expected
    pybase64 = pytest.importorskip("pybase64")
    monkeypatch.setattr(json_text, "_simd_b64decode", pybase64.b64decode)
    assert _decode_or_error(b64) == expected


# ------------------------------------------------------------------ format_value


@pytest.mark.parametrize(
    "value, expected",
    [
        ([1, 2.5, "a", None, True, False], '[1, 2.5, "a", null, true, false]'),
        ({"b64": "YQ=="}, '{\n    "b64": "YQ=="\n}'),
        ({"a": {"b": [1]}}, '{\n    "a": {\n        "b": [1]\n    }\n}'),
        ({}, "{}"),
        ([float("nan"), float("inf"), float("-inf")], "[NaN, Infinity, -Infinity]"),
    ],
)
def test_format_value(value, expected):
    assert format_value(value) == expected


def test_format_value_truncates():
    text = format_value(list(range(1000)))
    assert text.startswith("[0, 1, 2") and 256 <= len(text) < 270 and not text.endswith("]")
