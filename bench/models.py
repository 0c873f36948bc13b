"""Export the benchmark's models (InceptionV3 with untrained weights, or a tiny classifier).

Runs in a subprocess of the benchmark (``python -m bench.models``) so the benchmarking process never
imports TensorFlow: its clients stay as light as real ones, and its memory is not confused with a
server's. Untrained weights are fine here: speed does not depend on the weight values.

Typical usage::

    python -m bench.models --kind inception --base-path /tmp/bench/ImageClassifier
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scripts.processes import REPO_ROOT
from serving_contract import versions
from serving_contract.export import UNTRAINED_WEIGHTS, read_export_info

KINDS = ("inception", "tiny")
TINY_INPUT_SIZE = (32, 32)
TINY_CLASSES = 10
INCEPTION_INPUT_SIZE = (299, 299)
INCEPTION_CLASSES = 1000


def build_model(kind: str):
    """InceptionV3 (299x299, 1000 classes, weights=None) or the tiny classifier on 32x32."""
    import keras

    if kind == "inception":
        return keras.applications.InceptionV3(weights=None)
    return build_tiny_classifier()


def build_tiny_classifier(input_size: tuple[int, int] = TINY_INPUT_SIZE, classes: int = TINY_CLASSES,
                          seed: int = 0, name: str = "tiny"):
    """A small softmax classifier (one conv, global pooling, dense) with deterministic weights for ``seed``.

    Also the tests' model (tests/support/tiny_models.py), so the tiny benchmark serves what the tests check.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*input_size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def export_untrained(model, base_path: str | Path, version: int | None = None, preprocessing: str = "tf",
                     force: bool = False) -> Path:
    """Export ``model`` (untrained weights) as ``base_path/<version>/`` quietly; return that directory."""
    from scripts.export_saved_model import export_keras_model

    info = {"model": model.name, "weights": UNTRAINED_WEIGHTS, "preprocessing": preprocessing}
    return export_keras_model(model, base_path, version, force=force, info=info, log=lambda _msg: None)


def export_in_subprocess(kind: str, base_path: Path, timeout: float = 300.0) -> Path:
    """Export ``kind`` as ``base_path/1`` in a fresh Python process; return the version directory."""
    subprocess.run([sys.executable, "-m", "bench.models", "--kind", kind, "--base-path", str(base_path)],
                   cwd=REPO_ROOT, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return latest_version(base_path)


def latest_version(base_path: Path) -> Path:
    """The highest version directory under ``base_path`` (FileNotFoundError if none)."""
    version = versions.latest_version(base_path)
    if version is None:
        raise FileNotFoundError(f"no numeric version under {base_path}")
    return Path(base_path) / str(version)


def export_info(version_dir: Path) -> dict:
    """The export_info our exporter wrote into ``version_dir`` (FileNotFoundError if it has none)."""
    info = read_export_info(version_dir)
    if info is None:
        raise FileNotFoundError(f"no readable export info in {version_dir}")
    return info


def input_size(version_dir: Path) -> tuple[int, int]:
    """(height, width) the exported model expects, from its export_info.json."""
    height, width = export_info(version_dir)["input_size"]
    return int(height), int(width)


def gateway_models_config(version_dir: Path, directory: Path, route: str, model_name: str) -> Path | None:
    """A MODELS_CONFIG file serving ``version_dir``'s model on ``route``, or None if not needed.

    The gateway's built-in default is InceptionV3's shape (299x299, 1000 ImageNet labels); any other
    model (the tiny one) needs its input size and a labels file, written into ``directory``.
    """
    info = export_info(version_dir)
    if tuple(info["input_size"]) == INCEPTION_INPUT_SIZE and info["classes"] == INCEPTION_CLASSES:
        return None
    labels = directory / "labels.txt"
    labels.write_text("".join(f"class_{i}\n" for i in range(info["classes"])))
    height, width = info["input_size"]
    config = directory / "models.toml"
    config.write_text(f'[models.{route}]\nmodel_name = "{model_name}"\n'
                      f"input_size = [{height}, {width}]\nlabels = \"labels.txt\"\n")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, default="inception")
    parser.add_argument("--base-path", type=Path, required=True)
    args = parser.parse_args(argv)
    export_untrained(build_model(args.kind), args.base_path, version=1, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
