"""Real ImageNet weights through download_model.py and the export, checked in process (no servers).

MobileNetV2's real weights (``../shared/models/``, data only, never committed) go through the
scripts exactly as a user's download would; the exported ``serving_topk`` must name a cat for
test_images/chelsea.jpg and espresso for coffee.png, with Keras' own scores (``load_img`` +
``preprocess_input`` + ``predict``) within 1e-5. Skipped, with the reason, where the weights file
is absent. Going through model server and gateway is the end-to-end tier's job.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from scripts import download_model
from scripts import export_saved_model as export
from serving_contract.export import (OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL, OUTPUT_SCORES, SERVING_TOPK,
                                     read_export_info)
from serving_contract.versions import latest_version
from tests.support.processes import REPO_ROOT

WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_imagenet.weights.h5"
CATS = {"n02124075": "Egyptian_cat", "n02123045": "tabby", "n02123159": "tiger_cat"}
ESPRESSO = ("n07920052", "espresso")
PHOTOS = {"chelsea.jpg": set(CATS.items()), "coffee.png": {ESPRESSO}}

pytestmark = [pytest.mark.applications,
              pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"real MobileNetV2 weights not found at {WEIGHTS}")]


def quietly(main, *args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(list(args))
    assert code == 0, err.getvalue()
    return code


def test_real_mobilenet_v2_names_the_photos_like_keras(tmp_path):
    import keras
    import tensorflow as tf

    model_path = tmp_path / "mobilenetv2.keras"
    quietly(download_model.main, "--model", "MobileNetV2", "--weights", str(WEIGHTS), "--output", str(model_path))
    quietly(export.main, "--model", str(model_path), "--base-path", str(tmp_path / "MobileNetV2"))
    version_dir = tmp_path / "MobileNetV2" / str(latest_version(tmp_path / "MobileNetV2"))
    info = read_export_info(version_dir)
    assert (info["model"], info["preprocessing"], info["weights"]) == ("MobileNetV2", "tf", str(WEIGHTS.resolve()))

    images = [keras.utils.img_to_array(keras.utils.load_img(REPO_ROOT / "test_images" / name, target_size=(224, 224)))
              for name in PHOTOS]
    expected = keras.models.load_model(model_path, compile=False).predict(
        keras.applications.mobilenet_v2.preprocess_input(np.stack(images)), verbose=0)
    answer = tf.saved_model.load(str(version_dir)).signatures[SERVING_TOPK](
        pixels_bytes=tf.constant([image.astype(np.uint8).tobytes() for image in images]),
        k=tf.constant([5] * len(images)))
    ids, labels = answer[OUTPUT_CLASS_ID].numpy().astype(str), answer[OUTPUT_CLASS_LABEL].numpy().astype(str)
    for row, (name, accepted) in enumerate(PHOTOS.items()):
        assert (ids[row][0], labels[row][0]) in accepted, f"{name}: {list(zip(ids[row], labels[row]))}"
    np.testing.assert_allclose(answer[OUTPUT_SCORES].numpy(), -np.sort(-expected, axis=1)[:, :5], rtol=0, atol=1e-5)
