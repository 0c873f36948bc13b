"""Image bytes -> the float32 array an ImageNet classifier expects, with numpy and Pillow only.

The gateway must stay free of TensorFlow, yet its inputs must equal what Keras would feed the model.
So this module mirrors, step by step, ``keras.utils.load_img(path, color_mode="rgb",
target_size=size, interpolation=...)`` + ``img_to_array`` + ``keras.applications.<model>.preprocess_input``
(Keras 3.15: ``keras/src/utils/image_utils.py`` and ``keras/src/applications/imagenet_utils.py``):

* colour: ``img.convert("RGB")`` for any mode that is not RGB, exactly as Keras does. That includes
  Pillow's quirks: RGBA/LA/P transparency is dropped (not composited on white), CMYK uses Pillow's
  naive conversion, and 16-bit / 32-bit grey (``I;16``, ``I``, ``F``) is *clipped* to 0..255, not
  rescaled, so a typical 16-bit PNG comes out very bright. Matching Keras means the model sees what
  it would see in a Keras notebook; tests check equality for every mode.
* resize: ``img.resize((width, height), resample)`` with the same filter, skipped when the size
  already matches (Keras skips it too). Keras' ``target_size`` is (height, width); so is ``size`` here.
* scaling: the same in-place float32 operations in the same order as ``_preprocess_numpy_input``,
  so results are bit-identical, not merely close.

One deliberate difference: ``decode_image`` applies the EXIF orientation tag
(``ImageOps.exif_transpose``) and Keras does not. Phones store portrait photos as landscape pixels
plus a tag; ignoring it classifies a sideways picture. For images without the tag (all of
``test_images/``) the results are identical to Keras.

Untrusted input: only JPEG/PNG/WebP/GIF/BMP are opened (no EPS, which would start Ghostscript), the
pixel count is checked from the header *before* any pixel is decoded, and truncated or corrupt
files raise ``ImageDecodeError`` instead of being silently padded.

``draft=True`` lets libjpeg decode JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling), which is about
4x faster for a 2 MP photo but gives slightly different pixels from Keras (see the README figures),
so it is off by default.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving_contract.preprocessing import CAFFE_MEAN_BGR, TORCH_MEAN, TORCH_STD, check_mode

# Formats a browser or phone uploads. Camera multi-picture JPEGs open through the JPEG plugin
# (Pillow then reports their format as "MPO").
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
DEFAULT_MAX_PIXELS = 40_000_000
# keras.src.utils.image_utils.PIL_INTERPOLATION_METHODS
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = (5, 6, 7, 8)


class ImageDecodeError(ValueError):
    """The bytes are not an image this service accepts (not an image, corrupt, truncated)."""


class ImageTooLargeError(ImageDecodeError):
    """The image header claims more pixels than allowed; nothing was decoded."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, *,
                 draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image with EXIF orientation applied.

    Animated GIF/WebP give their first frame. ``draft_size`` (height, width) lets JPEGs decode at a
    reduced scale that is still at least that size (faster, not identical to Keras).

    Raises ImageTooLargeError if width x height exceeds ``max_pixels`` (checked from the header,
    before decoding), ImageDecodeError for anything that is not a complete, valid image.
    """
    if not data:
        raise ImageDecodeError("empty image data")
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    kind = image.format
    try:
        if kind == "PNG":
            # load() does not check IDAT checksums, so flipped bytes would decode to garbage pixels.
            # Pillow (13.0) has no option to check them while loading (PngImageFile.load_read skips
            # every CRC), so verify() checks them first: ~1 ms for a 790 KB PNG, against ~9 ms for
            # load(); the second _open() only re-reads the header (~0.04 ms).
            image.verify()
            image = _open(data)
        if draft_size is not None:
            _apply_draft(image, draft_size)
        image.load()  # decode now so corrupt or truncated data fails here, not later
        # After load(): a PNG may keep its EXIF after the pixel data, and getexif() would load it.
        orientation = _orientation(image)
        if orientation != 1:
            # Only when needed: exif_transpose copies the image even when there is nothing to do.
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as exc:
        raise ImageDecodeError(f"corrupt or truncated {kind} image: {_describe(exc)}") from exc
    return image


def resize(image: Image.Image, size: tuple[int, int], interpolation: str = "nearest") -> np.ndarray:
    """Resize an RGB image to ``size`` (height, width) as Keras' ``load_img`` does; uint8 (H, W, 3).

    These are the pixels the ``serving_uint8`` signature takes: the model scales them in its graph.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")
    height, width = size
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), INTERPOLATIONS[interpolation])
    return np.asarray(image)


def scale(pixels: np.ndarray, mode: str = "tf") -> np.ndarray:
    """``keras.applications`` ``preprocess_input`` for uint8 (..., H, W, 3) RGB pixels; float32 out.

    ``mode``: ``tf`` (-1..1, InceptionV3), ``caffe`` (BGR minus ImageNet means, ResNet50/VGG),
    ``torch`` (0..1 then ImageNet mean/std, DenseNet), or ``none`` (raw 0..255 floats).
    The exporter's ``serving_uint8`` signature does the same float32 operations in the same order.
    """
    check_mode(mode)
    # The uint8 -> float32 cast is the one copy; everything after is in place, as in Keras.
    x = pixels.astype(np.float32)
    if mode == "tf":
        x /= 127.5
        x -= 1.0
    elif mode == "torch":
        x /= 255.0
        # Per-channel float32 ops, identical to Keras' x[..., c] -= mean[c]; x[..., c] /= std[c].
        x -= np.asarray(TORCH_MEAN, dtype=np.float32)
        x /= np.asarray(TORCH_STD, dtype=np.float32)
    elif mode == "caffe":
        x = np.ascontiguousarray(x[..., ::-1])  # RGB -> BGR; contiguous so tobytes() is cheap
        x -= np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    return x


def preprocess(image: Image.Image, size: tuple[int, int], mode: str = "tf",
               interpolation: str = "nearest") -> np.ndarray:
    """``resize`` + ``scale``: an RGB image -> the float32 (H, W, 3) input Keras would feed the model.

    Draft decoding happens earlier, in ``decode_image`` (``load_and_preprocess(..., draft=True)``),
    since it must be asked for before the pixels are read.
    """
    check_mode(mode)  # before any work: a bad mode is the caller's bug
    return scale(resize(image, size, interpolation), mode)


def load_pixels(data: bytes, size: tuple[int, int], interpolation: str = "nearest",
                max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = False) -> np.ndarray:
    """``decode_image`` + ``resize``: image file bytes -> uint8 (H, W, 3), not yet scaled.

    Raises ImageDecodeError / ImageTooLargeError for bad input, ValueError for a bad interpolation.
    """
    image = decode_image(data, max_pixels, draft_size=size if draft else None)
    return resize(image, size, interpolation)


def load_and_preprocess(data: bytes, size: tuple[int, int], mode: str = "tf", interpolation: str = "nearest",
                        max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = False) -> np.ndarray:
    """``load_pixels`` + ``scale``: image file bytes -> float32 (H, W, 3) model input.

    Raises ImageDecodeError / ImageTooLargeError for bad input, ValueError for a bad mode.
    """
    check_mode(mode)
    return scale(load_pixels(data, size, interpolation, max_pixels, draft), mode)


def _open(data: bytes) -> Image.Image:
    """Identify the format and read the header only (no pixel data is decoded here)."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own, higher limit
        raise ImageTooLargeError(f"image too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not a supported image (expected {', '.join(ALLOWED_FORMATS)})") from exc
    except Exception as exc:  # Pillow raises many types for garbage input; all mean the same here
        raise ImageDecodeError(f"unreadable image header: {_describe(exc)}") from exc


def _apply_draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Ask libjpeg for the smallest DCT scale that still covers ``size`` (no-op for other formats)."""
    if image.format not in ("JPEG", "MPO"):
        return
    height, width = size
    # The EXIF rotation happens after decoding, so a 90-degree photo needs the swapped size.
    # (JPEG EXIF sits in the header: reading it here decodes no pixels.)
    swap = _orientation(image) in _ORIENTATIONS_SWAPPING_AXES
    image.draft("RGB", (height, width) if swap else (width, height))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); a damaged EXIF block must not reject a readable photo."""
    try:
        orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
