"""Recreate ``test_images/`` from the sample photos bundled in the installed scikit-image wheel.

The committed images are this script's output; rerun it to check they are what it says they are.
Files that are already PNG/JPEG are copied byte for byte (no re-encoding, so no generation loss);
chelsea is only shipped as PNG and becomes a quality-95 JPEG, so the tests have a small JPEG too.
Origins and licences: ``test_images/SOURCES.md``. No network, no TensorFlow.

Typical usage::

    python scripts/make_test_images.py            # writes test_images/
    python scripts/make_test_images.py --output /tmp/imgs
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

OUTPUT_DIR = Path(__file__).resolve().parents[1] / "test_images"
JPEG_QUALITY = 95
# output name -> file inside skimage/data
COPIES = {
    "astronaut.png": "astronaut.png",
    "coffee.png": "coffee.png",
    "rocket.jpg": "rocket.jpg",
    "retina.jpg": "retina.jpg",  # 1411x1411 (2 MP): the decode benchmark image
}
JPEG_CONVERSIONS = {"chelsea.jpg": "chelsea.png"}


def skimage_data_dir() -> Path:
    """The ``data`` directory of the installed scikit-image (imported lazily: it is a test dependency)."""
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def make_test_images(output: Path) -> list[Path]:
    """Write every test image into ``output`` and return their paths."""
    from PIL import Image

    source = skimage_data_dir()
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, original in COPIES.items():
        shutil.copyfile(source / original, output / name)
        written.append(output / name)
    for name, original in JPEG_CONVERSIONS.items():
        with Image.open(source / original) as image:
            image.convert("RGB").save(output / name, "JPEG", quality=JPEG_QUALITY)
        written.append(output / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="directory to write (default: test_images/)")
    args = parser.parse_args(argv)
    for path in make_test_images(args.output):
        print(f"{path}  {path.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
