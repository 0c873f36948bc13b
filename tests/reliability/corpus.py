"""The bad-input corpus, as data: what to send, how, and what the gateway / model server must answer.

Every ``Case`` is one request. ``send`` says how it goes on the wire:

    json       ``payload`` serialised as the JSON body (Content-Type application/json)
    raw        ``payload`` bytes as the body with ``content_type`` (None: no Content-Type at all)
    multipart  ``payload`` is {field: (filename, bytes, type)} files, sent as multipart/form-data
    form       ``payload`` is {field: value}, sent as application/x-www-form-urlencoded
    chunked    ``payload`` bytes with ``Transfer-Encoding: chunked`` (no Content-Length) and ``content_type``
    path       ``path`` is sent byte for byte on the request line (no client-side normalisation)

``status`` 200 marks inputs that look odd but are documented as accepted (URL-safe base64, data:
URLs, a 1x1 image...). For errors, ``message`` is a substring of ``{"error": ...}``.
Images are generated here, deterministically, with Pillow: no binary files in the repository.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from tests.reliability.conftest import MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MODEL, PREDICT, image_bytes

TUTORIAL = "/imageclassifier/predict/"


@dataclass(frozen=True)
class Case:
    name: str
    send: str
    payload: Any
    status: int
    message: str = ""
    content_type: str | None = None
    path: str = PREDICT
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


# --- the images ---------------------------------------------------------------------------------

PNG = image_bytes((40, 30), "PNG", seed=1)
JPEG = image_bytes((64, 48), "JPEG", seed=2, quality=90)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _urlsafe_png() -> bytes:
    """A PNG whose standard base64 contains '+' or '/', so its URL-safe form really differs."""
    for seed in range(100):
        data = image_bytes((8, 8), "PNG", seed=seed)
        if any(c in b64(data) for c in "+/"):
            return data
    raise AssertionError("no seed gives '+' or '/' in base64")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_header(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG that *claims* width x height (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def solid_png(width: int, height: int) -> bytes:
    """A real, fully decodable single-colour PNG: huge pixel count, a few kB on the wire."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG", optimize=True)
    return out.getvalue()


def corrupt_png_crc(data: bytes) -> bytes:
    """Flip one byte inside the IDAT data: the chunk's CRC no longer matches."""
    broken = bytearray(data)
    broken[data.index(b"IDAT") + 10] ^= 0xFF
    return bytes(broken)


def corrupt_jpeg_middle(data: bytes) -> bytes:
    """XOR every 7th byte of the entropy-coded scan (never creating or touching 0xFF markers)."""
    broken = bytearray(data)
    for i in range(data.index(b"\xff\xda") + 20, len(data) - 10, 7):
        if broken[i] != 0xFF and broken[i] ^ 0x55 != 0xFF:
            broken[i] ^= 0x55
    return bytes(broken)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return out.getvalue()


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


URLSAFE_PNG = _urlsafe_png()
TINY_1X1 = image_bytes((1, 1), "PNG", seed=3)
OVER_BODY_LIMIT = MAX_BODY_BYTES + 1000
GOOD = {"b64": b64(PNG)}

# --- the gateway corpus -------------------------------------------------------------------------

GATEWAY_CASES: list[Case] = [
    # body and Content-Type
    Case("empty_json_body", "raw", b"", 400, "body is not valid JSON", "application/json"),
    Case("empty_image_body", "raw", b"", 400, "empty image data", "image/png"),
    Case("no_content_type", "raw", PNG, 415, "unsupported Content-Type '(none)'", None),
    Case("text_plain", "raw", b"hello", 415, "unsupported Content-Type 'text/plain'", "text/plain"),
    Case("xml", "raw", b"<b64>x</b64>", 415, "unsupported Content-Type 'application/xml'", "application/xml"),
    Case("octet_stream", "raw", PNG, 415, "unsupported Content-Type 'application/octet-stream'",
         "application/octet-stream"),
    Case("invalid_json", "raw", b"{oops", 400, "body is not valid JSON", "application/json"),
    Case("json_with_nan", "raw", b'{"b64": NaN}', 400, "body is not valid JSON", "application/json"),
    Case("deeply_nested_json", "raw", deeply_nested(100_000), 400, "body is not valid JSON", "application/json"),
    Case("json_body_over_limit", "json", {"b64": "A" * OVER_BODY_LIMIT}, 413, ""),
    Case("image_body_over_limit", "raw", b"\x89PNG" + b"\0" * OVER_BODY_LIMIT, 413, "", "image/png"),
    # Without a Content-Length the limit must hold too: a chunked body is cut off at the limit, not trusted.
    Case("chunked_image", "chunked", PNG, 200, "", "image/png"),
    Case("chunked_image_over_limit", "chunked", PNG + b"\0" * OVER_BODY_LIMIT, 413, "", "image/png"),
    Case("chunked_json_over_limit", "chunked", b'{"b64": "' + b"A" * OVER_BODY_LIMIT + b'"}', 413, "",
         "application/json"),
    Case("multipart_over_limit", "multipart", {"file": ("big.png", b"\0" * OVER_BODY_LIMIT, "image/png")}, 413, ""),
    # base64: forgiving about what users paste, strict about the rest
    Case("invalid_base64", "json", {"b64": "not base64!"}, 400, "b64: not valid base64"),
    Case("non_ascii_base64", "json", {"b64": "ÿÿÿÿ"}, 400, "b64: base64 must be ASCII"),
    Case("empty_base64", "json", {"b64": ""}, 400, "b64: empty base64 string"),
    Case("bad_data_url", "json", {"b64": "data:image/png," + b64(PNG)}, 400, "expected a 'data:<type>;base64,' prefix"),
    Case("double_encoded_base64", "json", {"b64": b64(b64(PNG).encode())}, 400, "not a supported image"),
    Case("urlsafe_base64", "json", {"b64": base64.urlsafe_b64encode(URLSAFE_PNG).decode()}, 200),
    Case("unpadded_base64", "json", {"b64": b64(URLSAFE_PNG).rstrip("=")}, 200),
    Case("base64_with_newlines", "json", {"b64": base64.encodebytes(PNG).decode()}, 200),
    Case("base64_with_spaces_and_tabs", "json", {"b64": " \t".join(b64(PNG)[i:i + 10] for i in range(0, len(b64(PNG)), 10))}, 200),
    Case("data_url_prefix", "json", {"b64": "data:image/png;base64," + b64(PNG)}, 200),
    # image files: broken, odd, hostile
    Case("truncated_jpeg", "raw", JPEG[: len(JPEG) // 2], 400, "corrupt or truncated JPEG image", "image/jpeg"),
    Case("truncated_png", "raw", PNG[:300], 400, "corrupt or truncated PNG image", "image/png"),
    Case("png_bad_crc", "raw", corrupt_png_crc(PNG), 400, "corrupt or truncated PNG image", "image/png"),
    # JPEG has no checksum: libjpeg decodes damaged scan data to wrong pixels and Pillow accepts it,
    # so the gateway (documented: it rejects what Pillow cannot decode) answers 200.
    Case("jpeg_corrupt_scan_bytes", "raw", corrupt_jpeg_middle(JPEG), 200, "", "image/jpeg"),
    Case("text_file", "multipart", {"file": ("notes.txt", b"just some text\n" * 20, "text/plain")}, 400,
         "not a supported image"),
    Case("zero_byte_file", "multipart", {"file": ("empty.png", b"", "image/png")}, 400, "empty image data"),
    Case("eps_is_not_opened", "raw", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 400,
         "not a supported image", "image/png"),
    Case("one_by_one_pixel", "raw", TINY_1X1, 200, "", "image/png"),
    Case("animated_gif_first_frame", "raw", animated_gif(), 200, "", "image/gif"),
    Case("bomb_header_100000x100000", "raw", png_with_header(100_000, 100_000), 400, "too large", "image/png"),
    Case("bomb_over_configured_pixels", "raw", solid_png(2100, 2000), 400,
         f"more than the limit of {MAX_IMAGE_PIXELS}", "image/png"),
    # JSON shapes and types
    Case("b64_number", "json", {"b64": 12345}, 400, "b64 must be a base64 string, got a number"),
    Case("b64_list", "json", {"b64": [b64(PNG)]}, 400, "b64 must be a base64 string, got a list"),
    Case("b64_object", "json", {"b64": {"b64": b64(PNG)}}, 400, "b64 must be a base64 string, got an object"),
    Case("b64_null", "json", {"b64": None}, 400, "b64 must be a base64 string, got null"),
    Case("b64_bool", "json", {"b64": True}, 400, "b64 must be a base64 string, got a boolean"),
    Case("top_level_list", "json", [GOOD], 400, "expected a JSON object with 'b64' or 'instances', got a list"),
    Case("top_level_string", "json", b64(PNG), 400, "got a string"),
    Case("empty_object", "json", {}, 400, "send either 'b64'"),
    Case("unknown_field_typo", "json", {"b46": b64(PNG)}, 400, "unknown field(s) 'b46'"),
    Case("unknown_extra_field", "json", {**GOOD, "signature_name": "x"}, 400, "unknown field(s) 'signature_name'"),
    Case("b64_and_instances", "json", {**GOOD, "instances": [GOOD]}, 400, "not both"),
    Case("instances_object", "json", {"instances": GOOD}, 400, "'instances' must be a list"),
    Case("instances_string_items", "json", {"instances": [b64(PNG)]}, 400, "instances[0] must be an object"),
    Case("instance_extra_key", "json", {"instances": [GOOD, {**GOOD, "x": 1}]}, 400, "instances[1] must be an object"),
    Case("instance_bad_image", "json", {"instances": [GOOD, {"b64": b64(b"nope")}]}, 400, "instances[1]: not a supported image"),
    Case("empty_batch", "json", {"instances": []}, 400, "'instances' is empty"),
    Case("batch_over_limit", "json", {"instances": [GOOD] * (MAX_BATCH_SIZE + 1)}, 400,
         f"has {MAX_BATCH_SIZE + 1} images; this gateway accepts at most {MAX_BATCH_SIZE}"),
    Case("batch_at_limit", "json", {"instances": [GOOD] * MAX_BATCH_SIZE}, 200),
    # forms
    Case("multipart_no_file", "multipart", {"other": ("x.png", PNG, "image/png")}, 400, "form has no image"),
    Case("multipart_image_field", "multipart", {"image": ("x.png", PNG, "image/png")}, 200),
    Case("form_bad_base64", "form", {"b64": "%%%"}, 400, "b64: not valid base64"),
    Case("tutorial_form_b64", "form", {"b64": b64(PNG)}, 200, path=TUTORIAL),
    Case("tutorial_batch", "json", {"instances": [GOOD]}, 400, "this route takes one image", path=TUTORIAL),
    # top_k
    Case("top_k_zero", "json", GOOD, 400, "top_k must be between 1 and 10", path=PREDICT + "?top_k=0"),
    Case("top_k_over_classes", "json", GOOD, 400, "top_k must be between 1 and 10", path=PREDICT + "?top_k=11"),
    Case("top_k_negative", "json", GOOD, 400, "top_k must be between 1 and 10", path=PREDICT + "?top_k=-3"),
    Case("top_k_float", "json", GOOD, 400, "top_k must be an integer", path=PREDICT + "?top_k=1.5"),
    Case("top_k_word", "json", GOOD, 400, "top_k must be an integer", path=PREDICT + "?top_k=five"),
    Case("top_k_huge", "json", GOOD, 400, "top_k must be between", path=PREDICT + "?top_k=" + "9" * 400),
    # model names and paths: 404, never a file read
    Case("unknown_model", "json", GOOD, 404, "no model named 'nope'", path="/v1/models/nope/predict"),
    Case("traversal_plain", "path", GOOD, 404, "", path="/v1/models/../../etc/passwd/predict"),
    Case("traversal_encoded_dots", "path", GOOD, 404, "no model named '..'", path="/v1/models/%2e%2e/predict"),
    Case("traversal_encoded_slashes", "path", GOOD, 404, "", path="/v1/models/..%2f..%2fetc%2fpasswd/predict"),
    Case("traversal_mixed", "path", GOOD, 404, "", path="/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/predict"),
    Case("traversal_status_get", "path", None, 404, "", path="/v1/models/..%2f..%2fetc%2fpasswd", method="GET"),
    Case("traversal_static", "path", None, 404, "", path="/static/..%2f..%2f..%2fetc%2fpasswd", method="GET"),
    Case("traversal_static_plain", "path", None, 404, "", path="/static/../../../../etc/passwd", method="GET"),
    Case("nul_in_model_name", "path", GOOD, 404, "no model named", path="/v1/models/ti%00ny/predict"),
    Case("unknown_http_method", "path", GOOD, 405, "method is not allowed", path=PREDICT, method="BREW"),
    Case("get_on_predict", "path", None, 405, "method is not allowed", path=PREDICT, method="GET"),
    # headers
    Case("long_request_id", "json", GOOD, 200, headers={"X-Request-ID": "r" * 8000}),
    Case("request_id_with_spaces_and_quotes", "json", GOOD, 200, headers={"X-Request-ID": 'a b "c" <script>'}),
]

# --- the model server corpus (TF Serving's REST API, /v1/models/tiny:predict) ----------------------

MS_PREDICT_PATH = f"/v1/models/{MODEL}:predict"
IMAGE = np.zeros((32, 32, 3), dtype=np.float32).tolist()
NAN_IMAGE = json.dumps({"instances": [IMAGE]}).replace("0.0", "NaN", 1).encode()

MODEL_SERVER_CASES: list[Case] = [
    Case("malformed_json", "raw", b'{"instances": [1,', 400, "JSON Parse error", "application/json", MS_PREDICT_PATH),
    Case("empty_body", "raw", b"", 400, "JSON Parse error: The document is empty", "application/json", MS_PREDICT_PATH),
    Case("not_an_object", "json", [IMAGE], 400, "Is not object", path=MS_PREDICT_PATH),
    Case("missing_instances", "json", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key",
         path=MS_PREDICT_PATH),
    Case("instances_and_inputs", "json", {"instances": [IMAGE], "inputs": [IMAGE]}, 400,
         "expecting only one of 'inputs' or 'instances'", path=MS_PREDICT_PATH),
    Case("empty_instances", "json", {"instances": []}, 400, "No values in 'instances' array", path=MS_PREDICT_PATH),
    Case("instances_not_list", "json", {"instances": {"image": IMAGE}}, 400, "Expecting 'instances' to be an list/array",
         path=MS_PREDICT_PATH),
    Case("wrong_shape", "json", {"instances": [[[1.0, 2.0]]]}, 400,
         "must be 4-dimensional like the signature's [-1,32,32,3], got [1,1,2]", path=MS_PREDICT_PATH),
    Case("huge_dims", "json", {"instances": [[[0.0]] * 200_000]}, 400,
         "must be 4-dimensional like the signature's [-1,32,32,3]",
         path=MS_PREDICT_PATH),
    Case("ragged", "json", {"instances": [[1.0], [1.0, 2.0]]}, 400, "", path=MS_PREDICT_PATH),
    Case("strings_for_floats", "json", {"instances": [[[["a", "b", "c"]]]]}, 400,
         'JSON Value: "a" Type: String is not of expected type: float', path=MS_PREDICT_PATH),
    Case("bools_for_floats", "json", {"instances": [[[[True, False, True]]]]}, 400, "is not of expected type: float",
         path=MS_PREDICT_PATH),
    Case("b64_on_float_input", "json", {"instances": [{"b64": "AAAA"}]}, 400, "", path=MS_PREDICT_PATH),
    Case("deeply_nested", "raw", b'{"instances": ' + deeply_nested(100_000) + b"}", 400, "JSON Parse error",
         "application/json", MS_PREDICT_PATH),
    Case("signature_not_string", "json", {"signature_name": 3, "instances": [IMAGE]}, 400,
         "'signature_name' key must be a string value", path=MS_PREDICT_PATH),
    Case("unknown_signature", "json", {"signature_name": "nope", "instances": [IMAGE]}, 400,
         'Serving signature name: "nope" not found', path=MS_PREDICT_PATH),
    Case("bytes_bad_base64", "json", {"signature_name": "serving_bytes", "instances": [{"b64": "!!!"}]}, 400,
         "Unable to base64 decode", path=MS_PREDICT_PATH),
    Case("bytes_wrong_length", "json", {"signature_name": "serving_bytes", "instances": [{"b64": b64(b"12345")}]},
         400, "", path=MS_PREDICT_PATH),
    Case("bytes_number_for_string", "json", {"signature_name": "serving_bytes", "instances": [1.5]}, 400,
         "is not of expected type: string", path=MS_PREDICT_PATH),
    Case("unknown_model", "json", {"instances": [IMAGE]}, 404, "Servable not found for request: Latest(nope)",
         path="/v1/models/nope:predict"),
    Case("unknown_version", "json", {"instances": [IMAGE]}, 404, "Specific(tiny, 99)",
         path=f"/v1/models/{MODEL}/versions/99:predict"),
    Case("version_overflow", "json", {"instances": [IMAGE]}, 400, "Failed to convert version",
         path=f"/v1/models/{MODEL}/versions/99999999999999999999:predict"),
    Case("verb_case", "json", {"instances": [IMAGE]}, 400, "Malformed request", path=f"/v1/models/{MODEL}:PREDICT"),
    Case("put_method", "json", {"instances": [IMAGE]}, 400, "Malformed request: PUT", path=MS_PREDICT_PATH,
         method="PUT"),
    # TF Serving's dispatcher: any method on /v1/... reaches the URL parser, which calls it malformed.
    Case("unknown_http_method", "path", None, 400, "Malformed request: BREW", path=MS_PREDICT_PATH, method="BREW"),
    Case("traversal_status", "path", None, 404, "Could not find any versions of model ../../etc/passwd",
         path="/v1/models/..%2f..%2fetc%2fpasswd", method="GET"),
    Case("not_api_path", "path", None, 404, "Not found", path="/../../etc/passwd", method="GET"),
    # NaN is accepted like TF Serving (rapidjson parses NaN/Infinity tokens): 200, NaN scores back.
    Case("nan_input_accepted", "raw", NAN_IMAGE, 200, "", "application/json", MS_PREDICT_PATH),
]
