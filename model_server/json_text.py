"""JSON text of TF Serving's REST bodies, read and written the way rapidjson does it there.

Reading: bodies are parsed like rapidjson as ``tensorflow_serving/util/json_tensor.cc``
configures it (NaN/Infinity allowed, trailing bytes ignored), with rapidjson's error wording;
offending values are quoted in messages the way TF Serving quotes them (``format_value``).
The parts every body shares live here too: ``"signature_name"`` and ``{"b64": ...}`` values.
Writing: ``write_json`` emits bare ``NaN`` / ``Infinity`` tokens for non-finite floats and
strings as raw bytes, as TF Serving's responses do. No tensors here (see predict_codec).
"""

from __future__ import annotations

import binascii
import json
from itertools import chain

import numpy as np
import orjson

from model_server.errors import InvalidArgument

# JSON keys shared by every request body, named as in json_tensor.cc.
kPredictRequestSignatureKey = "signature_name"
kBase64Key = "b64"

# Same limit as TF Serving's kMaxJsonDebugStringBytes: offending JSON fragments
# quoted in messages are cut off once the rendering reaches this many characters.
kMaxJsonDebugStringBytes = 256

try:
    # Optional SIMD decoder: 0.08 ms instead of binascii's 3-7 ms for one InceptionV3 image
    # (1.9 MB of base64), which was ~80 % of the server's own time per serving_bytes request.
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # not a hard dependency: binascii gives the same answers, only slower
    _simd_b64decode = None

# ------------------------------------------------------------------------- reading

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


def parse_json_object(body: bytes) -> dict:
    """ParseJson(): parse a request body that must be a JSON object.

    Raises InvalidArgument with rapidjson's wording for malformed JSON and
    TF Serving's for a document that is not an object.
    """
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_lenient(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {format_value(doc)} Is not object")
    return doc


def read_signature_name(doc: dict) -> str:
    """FillSignature(): the optional "signature_name" ("" when absent), which must be a string."""
    name = doc.get(kPredictRequestSignatureKey, "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {format_value(doc)} not formatted correctly. "
            f"'{kPredictRequestSignatureKey}' key must be a string value."
        )
    return name


def json_value_error(doc: object, detail: str) -> InvalidArgument:
    """InvalidArgument "JSON Value: <doc, quoted> <detail>", TF Serving's form for a bad body."""
    return InvalidArgument(f"JSON Value: {format_value(doc)} {detail}")


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


# --------------------------------------------------------------- quoting in messages


def format_value(value: object, limit: int = kMaxJsonDebugStringBytes) -> str:
    """Render a parsed JSON value for an error message, as TF Serving quotes it.

    Follows rapidjson's PrettyWriter with single-line arrays (objects across lines,
    four-space indent) and, like TF Serving, stops emitting tokens once the output
    has reached ``limit`` characters, so the text may be cut mid-structure.
    """
    out: list[str] = []
    size = 0

    def emit(token: str) -> bool:
        nonlocal size
        if size >= limit:
            return False
        out.append(token)
        size += len(token)
        return True

    def render(val: object, indent: int) -> bool:
        if isinstance(val, dict):
            if not emit("{"):
                return False
            if not val:
                return emit("}")
            pad = " " * (4 * (indent + 1))
            for i, (key, item) in enumerate(val.items()):
                sep = ",\n" if i else "\n"
                if not emit(sep + pad + _quoted_string(str(key)) + ": "):
                    return False
                if not render(item, indent + 1):
                    return False
            return emit("\n" + " " * (4 * indent) + "}")
        if isinstance(val, list):
            if not emit("["):
                return False
            for i, item in enumerate(val):
                if i and not emit(", "):
                    return False
                if not render(item, indent):
                    return False
            return emit("]")
        return emit(_quoted_scalar(val))

    render(value, 0)
    return "".join(out)


def _quoted_string(text: str) -> str:
    try:
        return orjson.dumps(text).decode("utf-8")
    except TypeError:
        return orjson.dumps(text.encode("utf-8", "backslashreplace").decode()).decode()


def _quoted_scalar(val: object) -> str:
    if val is None:
        return "null"
    if val is True:
        return "true"
    if val is False:
        return "false"
    if isinstance(val, float):
        if val != val:
            return "NaN"
        if val in (float("inf"), float("-inf")):
            return "Infinity" if val > 0 else "-Infinity"
        return repr(val)
    if isinstance(val, str):
        return _quoted_string(val)
    return str(val)


# ------------------------------------------------------------------------- writing

# Raw JSON tokens TF Serving writes for non-finite floats (not strict JSON).
_NAN_TOKEN = orjson.Fragment(b"NaN")
_POS_INF_TOKEN = orjson.Fragment(b"Infinity")
_NEG_INF_TOKEN = orjson.Fragment(b"-Infinity")

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def string_token(raw: bytes) -> object:
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


def float_token(value: np.floating) -> object:
    """A float as TF Serving writes it: bare NaN / Infinity / -Infinity when not finite."""
    if value != value:
        return _NAN_TOKEN
    if np.isinf(value):
        return _POS_INF_TOKEN if value > 0 else _NEG_INF_TOKEN
    return value


def write_json(obj: object) -> bytes:
    """Serialize a response document (numpy arrays and scalars allowed) to JSON bytes."""
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)
