"""The benchmark's images and the two client-side preprocessing styles it compares.

Images: test_images/retina.jpg (a ~2 MP JPEG photo) and test_images/astronaut.png; until those land
in the repository, the same files from the installed scikit-image package are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flask_server.preprocess import load_and_preprocess, load_pixels
from scripts.processes import REPO_ROOT

IMAGE_NAMES = ("retina.jpg", "astronaut.png")


def image_paths() -> list[Path]:
    """The benchmark images: from test_images/ if present, else from scikit-image's data folder."""
    paths = []
    for name in IMAGE_NAMES:
        local = REPO_ROOT / "test_images" / name
        if local.exists():
            paths.append(local)
            continue
        import skimage

        paths.append(Path(skimage.__file__).parent / "data" / name)
    return paths


def preprocess(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The gateway's own preprocessing for ``serving_uint8``: decode + Keras' nearest resize, uint8
    (the model scales in its graph).

    This is the client's work in the "model server" row: exactly what the gateway does on its side.
    """
    return load_pixels(data, size, "nearest")


def preprocess_tutorial(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The tutorial's preprocessing: Keras ``load_img`` (nearest resize), then / 255.

    Kept to reproduce its cost; its [0, 1] scaling is wrong for InceptionV3 (which wants [-1, 1]),
    but speed does not depend on the values.
    """
    return load_and_preprocess(data, size, "none", "nearest") / 255.0
