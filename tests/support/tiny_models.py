"""Tiny Keras classifiers exported exactly like InceptionV3, for fast API tests.

They go through ``scripts.export_saved_model.export_keras_model`` so every test exercises the real
export path and signatures; only the network is small (a conv and a dense layer, ~1 s to export).
The network and the export call are bench/models.py's, so ``python -m bench --tiny`` serves the
same model the tests check.
"""

from __future__ import annotations

from pathlib import Path

from bench.models import TINY_CLASSES, TINY_INPUT_SIZE, build_tiny_classifier, export_untrained

__all__ = ["build_tiny_classifier", "export_tiny_classifier"]


def export_tiny_classifier(base_path: str | Path, version: int | None = None, *,
                           input_size: tuple[int, int] = TINY_INPUT_SIZE, classes: int = TINY_CLASSES,
                           seed: int = 0, preprocessing: str = "tf") -> Path:
    """Export a tiny classifier as ``base_path/<version>/`` and return that directory."""
    return export_untrained(build_tiny_classifier(input_size, classes, seed), base_path, version, preprocessing)
