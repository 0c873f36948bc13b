"""One export per preprocessing mode (tf, caffe, torch, none) against in-process Keras, untrained weights.

For each mode, what the exported ``serving_uint8`` and ``serving_topk`` answer for the raw pixels
of a real photo equals what Keras answers for the same photo through its own pipeline
(``load_img`` + ``preprocess_input`` of the model's ``keras.applications`` module + ``predict``),
within 1e-5. Small networks keep the CPU cost low: real ``keras.applications`` architectures for
``tf`` (MobileNetV2, alpha 0.35, 96 px) and ``none`` (MobileNetV3Small, 96 px, rescaling in its
graph), and the tiny classifier for ``caffe`` and ``torch`` with ResNet50's and DenseNet121's mode
recorded. The real-weights, through-the-gateway check is tests' end-to-end tier.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from scripts.export_saved_model import export_keras_model
from serving_contract.applications import APPLICATIONS
from serving_contract.export import (CUSTOM_MODEL, OUTPUT_CLASS_INDEX, OUTPUT_PROBABILITIES, OUTPUT_SCORES,
                                     SERVING_TOPK, SERVING_UINT8, UNTRAINED_WEIGHTS, read_export_info)
from serving_contract.preprocessing import MODES
from tests.support.processes import REPO_ROOT
from tests.support.tiny_models import build_tiny_classifier

PHOTOS = [REPO_ROOT / "test_images" / "chelsea.jpg", REPO_ROOT / "test_images" / "coffee.png"]
TOLERANCE = 1e-5
TOP_K = 5


def mobilenet_v2(keras):
    return calibrated(keras, keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None),
                      keras.applications.mobilenet_v2.preprocess_input)


def mobilenet_v3_small(keras):
    return calibrated(keras, keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None),
                      keras.applications.mobilenet_v3.preprocess_input)


def calibrated(keras, model, preprocess_input):
    """``model`` with each batch norm's statistics set to those of one batch of random pixels.

    Untrained, a deep network's activations shrink layer by layer (1e-9 before MobileNetV2's head),
    so every class scores exactly 1/1000 whatever the input, and a comparison of scores proves
    nothing. Normalising with real statistics keeps the weights random but the scores input-dependent.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to the batch's
    pixels = np.random.default_rng(1).integers(0, 256, (4, *model.input_shape[1:]), dtype=np.uint8)
    model(preprocess_input(pixels.astype(np.float32)), training=True)
    return model


def tiny(keras):
    return build_tiny_classifier((48, 48), classes=10, seed=5)


# mode -> (the keras.applications model whose preprocessing it is, how to build a small network, is it that model)
CASES = {
    "tf": ("MobileNetV2", mobilenet_v2, True),
    "caffe": ("ResNet50", tiny, False),
    "torch": ("DenseNet121", tiny, False),
    "none": ("MobileNetV3Small", mobilenet_v3_small, True),
}


def test_every_mode_has_a_case():
    assert set(CASES) == set(MODES)


def keras_pipeline(keras, model, module: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels as load_img gives them, Keras' probabilities for them) for PHOTOS."""
    preprocess_input = importlib.import_module(f"keras.applications.{module}").preprocess_input
    images = [keras.utils.img_to_array(keras.utils.load_img(path, target_size=size)) for path in PHOTOS]
    batch = np.stack(images)
    probabilities = model.predict(preprocess_input(batch.copy()), verbose=0)
    return batch.astype(np.uint8), probabilities


@pytest.mark.parametrize("mode", [pytest.param(mode, marks=[pytest.mark.applications] if CASES[mode][2] else [])
                                  for mode in MODES])
def test_exported_scores_equal_in_process_keras(mode, tmp_path):
    import keras
    import tensorflow as tf

    name, build, is_application = CASES[mode]
    application = APPLICATIONS[name]
    assert application.preprocessing == mode
    keras.utils.set_random_seed(0)
    model = build(keras)
    size = tuple(int(d) for d in model.input_shape[1:3])
    info = {"model": name if is_application else CUSTOM_MODEL, "preprocessing": application.preprocessing,
            "weights": UNTRAINED_WEIGHTS}
    version_dir = export_keras_model(model, tmp_path, info=info, log=lambda _msg: None)
    assert read_export_info(version_dir)["preprocessing"] == mode

    pixels, expected = keras_pipeline(keras, model, application.module, size)
    loaded = tf.saved_model.load(str(version_dir))
    pixels_bytes = tf.constant([image.tobytes() for image in pixels])
    served = loaded.signatures[SERVING_UINT8](pixels_bytes=pixels_bytes)[OUTPUT_PROBABILITIES].numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=TOLERANCE)

    top = loaded.signatures[SERVING_TOPK](pixels_bytes=pixels_bytes, k=tf.constant([TOP_K] * len(PHOTOS)))
    scores, indices = top[OUTPUT_SCORES].numpy(), top[OUTPUT_CLASS_INDEX].numpy()
    # Keras' own k best scores, and Keras' score for each class serving_topk picked (near-ties may swap places).
    np.testing.assert_allclose(scores, -np.sort(-expected, axis=1)[:, :TOP_K], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(scores, np.take_along_axis(expected, indices, axis=1), rtol=0, atol=TOLERANCE)

    # The comparison can fail: another mode's preprocessing moves the scores by far more than the tolerance.
    other_mode = {"tf": "caffe", "caffe": "torch", "torch": "tf", "none": "tf"}[mode]
    other_module = next(app.module for app in APPLICATIONS.values() if app.preprocessing == other_mode)
    _, wrong = keras_pipeline(keras, model, other_module, size)
    assert np.abs(wrong - expected).max() > 10 * TOLERANCE
