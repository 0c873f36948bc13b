"""Body parsing as pure functions: base64 forms users send, JSON shapes, batch limits."""

from __future__ import annotations

import base64
import random
import urllib.parse

import pytest

from flask_server.errors import BadRequest
from flask_server.request_parsing import (_decode_lenient_base64, _unquote_plus, decode_base64, parse_json_images,
                                          parse_top_k, parse_urlencoded_images)

# Bytes whose base64 uses '+' and '/' (so URL-safe and standard differ) and needs padding.
RAW = bytes([0xfb, 0xff, 0xbf, 0x00, 0x10])
STANDARD = base64.b64encode(RAW).decode()          # '+/+/ABA='
URLSAFE = base64.urlsafe_b64encode(RAW).decode()   # '-_-_ABA='


@pytest.mark.parametrize("text", [
    STANDARD,
    URLSAFE,
    STANDARD.rstrip("="),
    URLSAFE.rstrip("="),
    f"data:image/png;base64,{STANDARD}",
    f"data:image/jpeg;charset=utf-8;base64,{URLSAFE}",
    " " + STANDARD[:4] + "\n" + STANDARD[4:] + "\r\n\t",
])
def test_decode_base64_accepts_what_users_paste(text):
    assert decode_base64(text) == RAW


@pytest.mark.parametrize("length", range(1, 9))
def test_fast_and_lenient_base64_paths_agree(length):
    # decode_base64 tries pybase64 before normalising: for canonical input (lengths 1..8 cover
    # no, one and two '=') both paths must give the same bytes.
    raw = (RAW * 2)[:length]
    canonical = base64.b64encode(raw)
    assert decode_base64(canonical.decode()) == decode_base64(canonical) == raw
    assert _decode_lenient_base64(canonical, "b64") == raw


def test_fast_path_never_changes_an_answer():
    # Whatever the SIMD fast path accepts, the lenient path (binascii) must accept with the same
    # bytes, and what it refuses is left to the lenient path: so answers and errors are the
    # lenient path's. Short strings over base64's edge characters hit every padding rule.
    rng = random.Random(0)
    alphabet = "AB+/=QUJD-_ \n"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        try:
            expected = _decode_lenient_base64(text.encode(), "b64")
        except BadRequest:
            with pytest.raises(BadRequest):
                decode_base64(text)
        else:
            assert decode_base64(text) == expected, text


@pytest.mark.parametrize("text, message", [
    ("", "empty base64"),
    ("   \n", "empty base64"),
    ("abc$def", "not valid base64"),
    ("a", "not valid base64"),
    ("YWJj=ZGVm", "not valid base64"),
    ("data:image/png,abcd", "expected a 'data:<type>;base64,' prefix"),
    ("data:image/png;base64,", "empty base64"),
    ("é" + STANDARD, "base64 must be ASCII"),
])
def test_decode_base64_rejects_the_rest(text, message):
    with pytest.raises(BadRequest, match=message):
        decode_base64(text)


def test_error_quotes_the_field_name():
    with pytest.raises(BadRequest, match=r"instances\[1\]\.b64: not valid base64"):
        parse_json_images(b'{"instances": [{"b64": "AAAA"}, {"b64": "%%"}]}', 4)


def test_unquote_plus_is_urllibs():
    # The vectorised decoder must match urllib byte for byte, also where escapes and stray '%' mix:
    # '%%2B', '%2%3D', '%252B', lower/upper hex, '+' and non-ASCII bytes.
    rng = random.Random(0)
    pieces = [b"%", b"%2B", b"%2b", b"%2F", b"%2f", b"%3D", b"%3d", b"%25", b"%41", b"%2", b"2", b"B", b"D",
              b"+", b"A", b"=", b"\xff"]
    for _ in range(5000):
        value = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert _unquote_plus(value) == urllib.parse.unquote_to_bytes(value.replace(b"+", b" ")), value


def test_urlencoded_form_b64():
    body = urllib.parse.urlencode({"other": "x", "b64": STANDARD}).encode()
    assert parse_urlencoded_images(body).images == [RAW]
    escaped = urllib.parse.quote_plus(STANDARD).encode()  # a bare '+' would mean a space
    assert parse_urlencoded_images(b"b%364=" + escaped + b"&b64=AAAA").images == [RAW]  # first wins
    with pytest.raises(BadRequest, match="form has no image"):
        parse_urlencoded_images(b"file=abc&b65=AAAA")
    with pytest.raises(BadRequest, match="base64 must be ASCII"):
        parse_urlencoded_images(b"b64=%C3%A9AAA")
    with pytest.raises(BadRequest, match="b64: not valid base64"):
        parse_urlencoded_images(b"b64=%25%25%25")


def test_json_single_and_batch():
    single = parse_json_images(b'{"b64": "%s"}' % STANDARD.encode(), 4)
    assert single.images == [RAW] and not single.batch
    batch = parse_json_images(b'{"instances": [{"b64": "%s"}, {"b64": "%s"}]}'
                              % (STANDARD.encode(), URLSAFE.encode()), 4)
    assert batch.images == [RAW, RAW] and batch.batch


@pytest.mark.parametrize("body, message", [
    (b"{not json", "body is not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"b64": 5}', "b64 must be a base64 string, got a number"),
    (b'{"b64": null}', "b64 must be a base64 string, got null"),
    (b'{"image": "AAAA"}', "unknown field\\(s\\) 'image'"),
    (b'{"b64": "AAAA", "top_k": 3}', "unknown field\\(s\\) 'top_k'"),
    (b'{"b64": "AAAA", "instances": []}', "not both"),
    (b'{"instances": {"b64": "AAAA"}}', "'instances' must be a list"),
    (b'{"instances": []}', "'instances' is empty"),
    (b'{"instances": ["AAAA"]}', r"instances\[0\] must be an object"),
    (b'{"instances": [{"b64": "AAAA", "x": 1}]}', r"instances\[0\] must be an object"),
    (b'{"instances": [{"b64": "AAAA"}, {"b64": "AAAA"}, {"b64": "AAAA"}]}', "has 3 images; .* at most 2"),
])
def test_json_errors(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_json_images(body, max_batch_size=2)


@pytest.mark.parametrize("raw, expected", [(None, 5), ("3", 3), ("-1", -1)])
def test_top_k_parameter(raw, expected):
    assert parse_top_k(raw, 5) == expected


def test_top_k_must_be_an_integer():
    with pytest.raises(BadRequest, match="top_k must be an integer, got 'three'"):
        parse_top_k("three", 5)
