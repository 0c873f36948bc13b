"""Request bodies -> image file bytes. Pure functions of the body; no model, no Flask app state.

Accepted bodies (``images_from_request`` picks by Content-Type):

* ``application/json``: ``{"b64": "<image>"}`` (one image) or ``{"instances": [{"b64": ...}, ...]}``
  (a batch). Any other top-level field is rejected with 400, so a typo such as ``"b46"`` or
  ``"instance"`` is reported instead of silently ignored.
* ``multipart/form-data``: a file in field ``file`` (or ``image``), or a form field ``b64``.
* ``application/x-www-form-urlencoded``: form field ``b64`` (the tutorial's client).
* ``image/*``: the body is the image file itself.

The body is read in exactly one place, ``read_body``, which also enforces GATEWAY_MAX_BODY_BYTES
on bodies without a Content-Length (chunked), where Werkzeug would silently stop at the limit.
JSON and form-urlencoded bodies are parsed here from those bytes (orjson; a vectorised
percent-decoder, see ``parse_urlencoded_images``); multipart goes through Werkzeug's parser.

Base64 is forgiving about what users paste and strict about everything else: standard or URL-safe
alphabet, padding optional, whitespace and newlines ignored, an optional ``data:image/...;base64,``
prefix. Anything else is a 400 that quotes the offending value.
"""

from __future__ import annotations

import binascii
import dataclasses
import re
from typing import Any

import numpy as np
import orjson
import pybase64
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge

from flask_server.errors import BadRequest, UnsupportedMediaType, quote

B64_KEY = "b64"
_B64_KEY_BYTES = B64_KEY.encode()
INSTANCES_KEY = "instances"
FILE_FIELDS = ("file", "image")
JSON_KEYS = (B64_KEY, INSTANCES_KEY)
# URL-safe alphabet -> standard, and ASCII whitespace dropped, in one bytes.translate pass.
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_WHITESPACE = b" \t\r\n\f\v"
_DATA_URL = re.compile(rb"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
# Byte -> its value as a hex digit, 255 for a byte that is not one (for _unquote_plus).
_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
_HEX_VALUES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_HEX_VALUES[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)
_JSON_TYPES = {str: "a string", list: "a list", dict: "an object", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class ImageInputs:
    """The image file bytes of a request; ``batch`` is true for ``instances`` (answer with a list)."""

    images: list[bytes]
    batch: bool


def decode_base64(value: str | bytes, where: str = B64_KEY) -> bytes:
    """Decode user-supplied base64 (see module doc for what is accepted); BadRequest otherwise.

    Nearly every client sends canonical base64 (standard alphabet, padded, no whitespace), so that
    is tried first with pybase64's SIMD decoder on the bytes as received: 0.06 ms instead of
    binascii's 2.5 ms for a 790 KB PNG, and no normalising copies. It accepts only what
    ``binascii.a2b_base64(strict_mode=True)`` accepts, with the same result, and normalising changes
    nothing binascii accepts; anything it refuses goes to the lenient path, which decides.
    """
    if isinstance(value, str):
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise BadRequest(f"{where}: base64 must be ASCII, got {quote(value)}") from None
    else:
        data = value
    if data:  # b"" would decode to b""; the lenient path says why it is refused
        try:
            return pybase64.b64decode(data, validate=True)
        except ValueError:  # binascii.Error too; pybase64 also refuses some paddings binascii accepts
            pass
    return _decode_lenient_base64(data, where)


def _decode_lenient_base64(data: bytes, where: str) -> bytes:
    """``decode_base64`` for what the SIMD fast path refused: data: prefix, URL-safe alphabet,
    whitespace, missing padding; BadRequest quoting the normalised value if it is still invalid."""
    if data[:5].lower() == b"data:":
        match = _DATA_URL.match(data)
        if not match:
            raise BadRequest(f"{where}: expected a 'data:<type>;base64,' prefix, got {quote(data[:40])}")
        data = data[match.end():]
    data = data.translate(_URLSAFE_TO_STANDARD, _WHITESPACE)
    if not data:
        raise BadRequest(f"{where}: empty base64 string")
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as exc:
        raise BadRequest(f"{where}: not valid base64 ({exc}): {quote(data[:60])}") from exc


def parse_json_images(body: bytes, max_batch_size: int) -> ImageInputs:
    """``{"b64": ...}`` or ``{"instances": [{"b64": ...}, ...]}`` -> image bytes; BadRequest otherwise."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequest(f"expected a JSON object with {B64_KEY!r} or {INSTANCES_KEY!r}, got {_json_type(document)}")
    unknown = sorted(set(document) - set(JSON_KEYS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; expected {B64_KEY!r} or {INSTANCES_KEY!r}")
    if len(document) != 1:
        raise BadRequest(f"send either {B64_KEY!r} (one image) or {INSTANCES_KEY!r} (a batch), not both")
    if B64_KEY in document:
        return ImageInputs([_b64_field(document[B64_KEY], B64_KEY)], batch=False)
    instances = document[INSTANCES_KEY]
    if not isinstance(instances, list):
        raise BadRequest(f"{INSTANCES_KEY!r} must be a list of {{\"b64\": ...}} objects, got {_json_type(instances)}")
    check_batch_size(len(instances), max_batch_size)
    images = []
    for i, instance in enumerate(instances):
        where = f"{INSTANCES_KEY}[{i}]"
        if not isinstance(instance, dict) or set(instance) != {B64_KEY}:
            raise BadRequest(f"{where} must be an object {{\"b64\": \"...\"}}, got {quote(instance)}")
        images.append(_b64_field(instance[B64_KEY], f"{where}.{B64_KEY}"))
    return ImageInputs(images, batch=True)


def parse_form_images(form: MultiDict, files: MultiDict) -> ImageInputs:
    """A multipart file in ``file``/``image``, or a base64 form field ``b64``."""
    for field in FILE_FIELDS:
        upload: FileStorage | None = files.get(field)
        if upload is not None:
            return ImageInputs([upload.read()], batch=False)
    if B64_KEY in form:
        return ImageInputs([decode_base64(form[B64_KEY])], batch=False)
    raise _no_form_image()


def parse_urlencoded_images(body: bytes) -> ImageInputs:
    """The first ``b64`` field of an application/x-www-form-urlencoded body (the tutorial's client).

    Parsed here, not by Werkzeug (``urllib.parse.parse_qsl``): every ``+``, ``/`` and ``=`` of the
    base64 is sent as ``%XX`` and urllib decodes escapes one at a time in Python, 60-100 ms for a
    790 KB PNG (167,000 escapes), against ~7 ms for ``_unquote_plus``. One difference: Werkzeug
    silently drops a whole form that is not UTF-8; here only the ``b64`` field itself is judged.
    """
    for field in body.split(b"&"):
        name, _, value = field.partition(b"=")
        if _unquote_plus(name) == _B64_KEY_BYTES:
            value = _unquote_plus(value)
            # Non-ASCII as text, so decode_base64 reports it as such rather than as bad base64.
            return ImageInputs([decode_base64(value if value.isascii() else value.decode("utf-8", "replace"))],
                               batch=False)
    raise _no_form_image()


def _no_form_image() -> BadRequest:
    return BadRequest(f"form has no image: send a file in field {FILE_FIELDS[0]!r} or base64 in field {B64_KEY!r} "
                      "(for a JSON body, set Content-Type: application/json)")


def _unquote_plus(value: bytes) -> bytes:
    """``urllib.parse.unquote_to_bytes`` after ``+`` -> space, vectorised with numpy.

    ``%XX`` (two hex digits, either case) becomes that byte; any other ``%`` stays as it is. A
    ``%`` is never a hex digit, so escapes cannot overlap and all of them can be found at once.
    (Six ``bytes.replace`` passes for base64's escapes measured twice as slow as this.)
    """
    value = value.replace(b"+", b" ")
    if b"%" not in value:
        return value
    chars = np.frombuffer(value, dtype=np.uint8)
    starts = np.flatnonzero(chars[:-2] == ord("%"))
    high, low = _HEX_VALUES[chars[starts + 1]], _HEX_VALUES[chars[starts + 2]]
    valid = (high < 16) & (low < 16)
    starts = starts[valid]
    decoded = chars.copy()
    decoded[starts] = (high[valid] << 4) | low[valid]
    keep = np.ones(chars.size, dtype=bool)
    keep[starts + 1] = False
    keep[starts + 2] = False
    return decoded[keep].tobytes()


def images_from_request(request: Any, max_batch_size: int) -> ImageInputs:
    """Pick the parser for the request's Content-Type (a Flask/werkzeug request)."""
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return parse_json_images(read_body(request), max_batch_size)
    if mimetype == "application/x-www-form-urlencoded":
        return parse_urlencoded_images(read_body(request))
    if mimetype == "multipart/form-data":
        read_body(request)  # cached on the request: the form parser below reads that copy
        return parse_form_images(request.form, request.files)
    if mimetype.startswith("image/"):
        return ImageInputs([read_body(request)], batch=False)
    raise UnsupportedMediaType(
        f"unsupported Content-Type {mimetype or '(none)'!r}; send application/json {{\"b64\": ...}}, "
        f"multipart/form-data with a {FILE_FIELDS[0]!r} field, or an image/* body")


def read_body(request: Any) -> bytes:
    """The whole request body, at most ``request.max_content_length`` bytes, else 413.

    A body with a Content-Length over the limit is refused by Werkzeug before any read. A body
    without one (``Transfer-Encoding: chunked``) is read through a stream that silently ends at the
    limit, so a body that fills it is probed for one more byte: a truncated image or JSON document
    must be a 413, never parsed. The body is cached on the request (Werkzeug's form parser reuses
    the cached bytes), so this is the only place that reads it.

    :raise RequestEntityTooLarge: the body is longer than the limit.
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        # Past the limit the limited stream raises on any read, even at the body's true end, so
        # probe the server's stream; it is positioned exactly after the ``limit`` bytes read.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    return data


def check_batch_size(size: int, max_batch_size: int) -> None:
    """BadRequest unless 1 <= size <= max_batch_size."""
    if size < 1:
        raise BadRequest(f"{INSTANCES_KEY!r} is empty; send at least one image")
    if size > max_batch_size:
        raise BadRequest(f"{INSTANCES_KEY!r} has {size} images; this gateway accepts at most {max_batch_size} per request")


def parse_top_k(raw: str | None, default: int) -> int:
    """The ``top_k`` query parameter as an int (range is checked against the model's classes later)."""
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"top_k must be an integer, got {quote(raw)}") from None


def _b64_field(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a base64 string, got {_json_type(value)}")
    return decode_base64(value, where)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)
