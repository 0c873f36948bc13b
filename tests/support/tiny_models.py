"""Tiny Keras classifiers exported exactly like InceptionV3, for fast API tests.

They go through ``scripts.export_saved_model.export_keras_model`` so every test exercises the real
export path and signatures; only the network is small (a conv and a dense layer, ~1 s to export).
"""

from __future__ import annotations

from pathlib import Path

from scripts.export_saved_model import export_keras_model


def build_tiny_classifier(input_size: tuple[int, int] = (32, 32), classes: int = 10, seed: int = 0,
                          name: str = "tiny"):
    """A small softmax classifier with deterministic weights for ``seed``."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def export_tiny_classifier(base_path: str | Path, version: int | None = None, *, input_size=(32, 32),
                           classes: int = 10, seed: int = 0, preprocessing: str = "tf") -> Path:
    """Export a tiny classifier as ``base_path/<version>/`` and return that directory."""
    model = build_tiny_classifier(input_size, classes, seed)
    info = {"model": model.name, "weights": "untrained", "preprocessing": preprocessing}
    return export_keras_model(model, base_path, version, info=info, log=lambda _msg: None)
