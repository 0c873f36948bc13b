"""Export the benchmark's models (InceptionV3 with untrained weights, or a tiny classifier).

Runs in a subprocess of the benchmark (``python -m bench.models``) so the benchmarking process never
imports TensorFlow: its clients stay as light as real ones, and its memory is not confused with a
server's. Untrained weights are fine here: speed does not depend on the weight values.

Typical usage::

    python -m bench.models --kind inception --base-path /tmp/bench/ImageClassifier
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from scripts.auto_cmd import REPO_ROOT

KINDS = ("inception", "tiny")
TINY_INPUT_SIZE = (32, 32)
TINY_CLASSES = 10
INCEPTION_INPUT_SIZE = (299, 299)
INCEPTION_CLASSES = 1000
EXPORT_INFO = Path("assets.extra") / "export_info.json"


def build_model(kind: str):
    """InceptionV3 (299x299, 1000 classes, weights=None) or a conv+dense classifier on 32x32."""
    import keras

    if kind == "inception":
        return keras.applications.InceptionV3(weights=None)
    # Same shape as tests/support/tiny_models.py: one conv, global pooling, softmax.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*TINY_INPUT_SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(TINY_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


def export_in_subprocess(kind: str, base_path: Path, timeout: float = 300.0) -> Path:
    """Export ``kind`` as ``base_path/1`` in a fresh Python process; return the version directory."""
    subprocess.run([sys.executable, "-m", "bench.models", "--kind", kind, "--base-path", str(base_path)],
                   cwd=REPO_ROOT, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return latest_version(base_path)


def latest_version(base_path: Path) -> Path:
    """The highest numeric version directory under ``base_path`` (FileNotFoundError if none)."""
    versions = sorted((p for p in Path(base_path).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(f"no numeric version under {base_path}")
    return versions[-1]


def input_size(version_dir: Path) -> tuple[int, int]:
    """(height, width) the exported model expects, from its export_info.json."""
    height, width = json.loads((version_dir / EXPORT_INFO).read_text())["input_size"]
    return int(height), int(width)


def gateway_models_config(version_dir: Path, directory: Path, route: str, model_name: str) -> Path | None:
    """A MODELS_CONFIG file serving ``version_dir``'s model on ``route``, or None if not needed.

    The gateway's built-in default is InceptionV3's shape (299x299, 1000 ImageNet labels); any other
    model (the tiny one) needs its input size and a labels file, written into ``directory``.
    """
    info = json.loads((version_dir / EXPORT_INFO).read_text())
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
    from scripts.export_saved_model import export_keras_model

    model = build_model(args.kind)
    info = {"model": model.name, "weights": "untrained", "preprocessing": "tf"}
    export_keras_model(model, args.base_path, version=1, force=True, info=info, log=lambda _msg: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
