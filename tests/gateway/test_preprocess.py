"""flask_server.preprocess against Keras itself: same pixels for every photo, mode and image kind.

The tests may import Keras (the module under test must not; see test_gateway_modules_import_without_tensorflow).
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flask_server.preprocess import (ImageDecodeError, ImageTooLargeError, decode_image, load_and_preprocess,
                                     load_pixels, preprocess, scale)

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGES = REPO / "test_images"
PHOTOS = sorted(p for p in TEST_IMAGES.iterdir() if p.suffix in (".jpg", ".png"))
SIZE = (299, 299)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def keras_reference():
    """``(data, size, mode, interpolation) -> array`` the way a Keras notebook preprocesses a file."""
    import keras
    from keras.applications.imagenet_utils import preprocess_input

    def reference(data: bytes, size=SIZE, mode="tf", interpolation="nearest") -> np.ndarray:
        image = keras.utils.load_img(io.BytesIO(data), target_size=size, interpolation=interpolation)
        x = keras.utils.img_to_array(image)
        return x if mode == "none" else preprocess_input(x, mode=mode)

    return reference


def ours(data: bytes, size=SIZE, mode="tf", interpolation="nearest") -> np.ndarray:
    return preprocess(decode_image(data), size, mode, interpolation)


def assert_equal_to_keras(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    """A non-square RGB photo (so resizes and rotations are visible), small enough to be quick."""
    return Image.open(TEST_IMAGES / "chelsea.jpg").convert("RGB").resize((160, 106))


# --- real photos -------------------------------------------------------------------------------

def test_test_images_present():
    assert {p.name for p in PHOTOS} >= {"chelsea.jpg", "astronaut.png", "coffee.png", "rocket.jpg", "retina.jpg"}


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_photo_equals_keras(path, mode, keras_reference):
    data = path.read_bytes()
    assert_equal_to_keras(ours(data, mode=mode), keras_reference(data, mode=mode))


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_bilinear_equals_keras(mode, keras_reference):
    data = (TEST_IMAGES / "rocket.jpg").read_bytes()
    assert_equal_to_keras(ours(data, mode=mode, interpolation="bilinear"),
                          keras_reference(data, mode=mode, interpolation="bilinear"))


def test_mode_none_is_raw_pixels_and_other_sizes(keras_reference):
    data = (TEST_IMAGES / "coffee.png").read_bytes()
    x = ours(data, size=(224, 160), mode="none")
    assert x.shape == (224, 160, 3) and x.min() >= 0 and x.max() <= 255
    assert_equal_to_keras(x, keras_reference(data, size=(224, 160), mode="none"))


def test_output_is_contiguous_float32_for_every_mode():
    data = (TEST_IMAGES / "chelsea.jpg").read_bytes()
    for mode in ("tf", "caffe", "torch", "none"):
        x = load_and_preprocess(data, SIZE, mode)
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_uint8_pixels_are_keras_load_img_and_scale_gives_the_rest(path, keras_reference):
    """What the gateway sends to serving_uint8 is Keras' unscaled image; scaling it is the float path."""
    data = path.read_bytes()
    pixels = load_pixels(data, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (*SIZE, 3)
    np.testing.assert_array_equal(pixels, keras_reference(data, mode="none"))
    for mode in ("tf", "caffe", "torch", "none"):
        np.testing.assert_array_equal(scale(pixels, mode), load_and_preprocess(data, SIZE, mode))


def test_draft_is_close_but_not_keras():
    data = (TEST_IMAGES / "retina.jpg").read_bytes()
    assert decode_image(data, draft_size=SIZE).size == (353, 353)  # 1411 / 4, still >= 299
    full = load_and_preprocess(data, SIZE)
    draft = load_and_preprocess(data, SIZE, draft=True)
    assert draft.shape == full.shape and not np.array_equal(draft, full)
    assert np.abs(draft - full).mean() < 0.05  # small on average; single pixels can differ a lot


def test_invalid_arguments():
    image = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="mode"):
        preprocess(image, SIZE, mode="inception")
    with pytest.raises(ValueError, match="interpolation"):
        preprocess(image, SIZE, interpolation="cubic")


# --- image kinds -------------------------------------------------------------------------------

def _with_alpha(cat: Image.Image, mode: str) -> Image.Image:
    base = cat.convert(mode[0] if mode == "LA" else "RGB")
    alpha = Image.linear_gradient("L").resize(cat.size)
    base.putalpha(alpha)
    return base


def _palette_with_transparency(cat: Image.Image) -> bytes:
    image = cat.quantize(64)
    return encode(image, "PNG", transparency=0)


def _cmyk_jpeg(cat: Image.Image) -> bytes:
    return encode(cat.convert("CMYK"), "JPEG", quality=90)


def _png16(cat: Image.Image) -> bytes:
    # Small 16-bit values so the clipping Pillow (and so Keras) applies does not hide everything.
    values = np.asarray(cat.convert("L"), dtype=np.uint16) + 40
    return encode(Image.fromarray(values), "PNG")


KINDS = {
    "RGBA": (lambda cat: encode(_with_alpha(cat, "RGBA"), "PNG"), "RGBA"),
    "LA": (lambda cat: encode(_with_alpha(cat, "LA"), "PNG"), "LA"),
    "P-transparency": (_palette_with_transparency, "P"),
    "L": (lambda cat: encode(cat.convert("L"), "PNG"), "L"),
    "1-bit": (lambda cat: encode(cat.convert("1"), "PNG"), "1"),
    "CMYK-jpeg": (_cmyk_jpeg, "CMYK"),
    "16-bit-png": (_png16, "I;16"),
    "webp": (lambda cat: encode(cat, "WEBP", quality=90), "RGB"),
    "bmp": (lambda cat: encode(cat, "BMP"), "RGB"),
    "gif": (lambda cat: encode(cat, "GIF"), "P"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_image_kind_equals_keras(kind, cat, keras_reference):
    make, source_mode = KINDS[kind]
    data = make(cat)
    assert Image.open(io.BytesIO(data)).mode == source_mode  # the test builds what it claims
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == cat.size
    assert_equal_to_keras(preprocess(image, SIZE), keras_reference(data))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32bit_modes_convert_like_keras(mode):
    # No allowed file format stores these, but preprocess() accepts any PIL image: Keras does
    # img.convert("RGB") (clipping to 0..255), and so must we.
    values = np.array([[-5, 0, 100, 255, 300, 70000]] * 4, dtype=np.int32 if mode == "I" else np.float32)
    image = Image.fromarray(values)
    assert image.mode == mode
    expected = np.asarray(image.convert("RGB"), dtype=np.float32)
    np.testing.assert_array_equal(preprocess(image, (4, 6), mode="none"), expected)


def test_animated_gif_gives_first_frame(keras_reference):
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    x = ours(data, size=(8, 8), mode="none")
    np.testing.assert_array_equal(x[0, 0], [255, 0, 0])
    assert_equal_to_keras(x, keras_reference(data, size=(8, 8), mode="none"))


def test_animated_webp_gives_first_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    x = ours(data, size=(8, 8), mode="none")
    np.testing.assert_array_equal(x[0, 0], [0, 255, 0])


def test_exif_orientation_is_applied(cat):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": how phones store portrait photos
    data = encode(cat, "JPEG", quality=95, exif=exif.tobytes())
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    image = decode_image(data)
    assert image.size == (cat.height, cat.width)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))
    # draft decoding asks for the pre-rotation size, so the rotated result still covers the target
    assert decode_image(data, draft_size=(100, 50)).size[0] >= 50


# --- bad input ---------------------------------------------------------------------------------

def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _corrupt_png() -> bytes:
    data = bytearray((TEST_IMAGES / "coffee.png").read_bytes())
    start = data.find(b"IDAT") + 2000
    data[start:start + 100] = bytes(b ^ 0xFF for b in data[start:start + 100])
    return bytes(data)


BAD_INPUTS = {
    "truncated-jpeg": (lambda: (TEST_IMAGES / "chelsea.jpg").read_bytes()[:25_000], "truncated"),
    "truncated-png": (lambda: (TEST_IMAGES / "coffee.png").read_bytes()[:200_000], "truncated"),
    "corrupt-png": (_corrupt_png, "corrupt"),
    "text": (lambda: b"hello, I am not an image\n", "not a supported image"),
    "zero-bytes": (lambda: b"", "empty"),
    "png-signature-only": (lambda: b"\x89PNG\r\n\x1a\n", "not a supported image"),
    "eps": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a supported image"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_raises_decode_error(kind):
    make, message = BAD_INPUTS[kind]
    data = make()
    started = time.monotonic()
    with pytest.raises(ImageDecodeError, match=message) as info:
        decode_image(data)
    assert type(info.value) is ImageDecodeError
    assert isinstance(info.value, ValueError)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("max_pixels", [40_000_000, 10**12])
def test_decompression_bomb_rejected_from_header(max_pixels):
    # 100000 x 100000 RGB would be 30 GB decoded; the file is 60 bytes. Pillow's own bomb check
    # (about 179 MP) applies even when our limit is higher.
    data = _png_header_only(100_000, 100_000)
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(data, max_pixels)
    assert time.monotonic() - started < 0.5


def test_max_pixels_checked_before_decoding():
    data = (TEST_IMAGES / "retina.jpg").read_bytes()
    with pytest.raises(ImageTooLargeError, match="1411x1411 = 1990921 pixels.*limit of 1000000"):
        load_and_preprocess(data, SIZE, max_pixels=1_000_000)
    assert decode_image(data, max_pixels=1411 * 1411).size == (1411, 1411)


@pytest.mark.e2e
def test_gateway_modules_import_without_tensorflow():
    code = ("import flask_server.preprocess, flask_server.labels, sys; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
