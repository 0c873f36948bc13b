"""Export a saved Keras image classifier as the next version of a TF Serving model directory.

Writes ``<base_path>/<N>/`` (a SavedModel) where N is the next free integer version, or ``--version``.
The version is written into a hidden temporary directory beside it and renamed into place, so a
model server polling ``base_path`` never sees a half-written version.

Signatures (stable names, documented in the README):

* ``serving_default``: input ``image`` float32 ``[batch, H, W, 3]``, already preprocessed;
  output ``probabilities`` float32 ``[batch, classes]``.
* ``serving_uint8``: input ``pixels_bytes`` string ``[batch]``, each element the raw uint8 bytes of
  one resized, *unscaled* ``H x W x 3`` RGB image (send as ``{"b64": ...}``); the graph applies the
  preprocessing mode recorded at export, with the same float32 operations as
  ``flask_server.preprocess.scale`` (so the model sees what Keras would feed it); same output.
  This is the gateway's fast path: 357 KB of base64 per 299x299 image, against 1.4 MB for
  ``serving_bytes`` and 5.8 MB of float JSON.
* ``serving_bytes``: input ``pixels_bytes`` string ``[batch]``, each element the raw little-endian
  float32 bytes of one preprocessed ``H x W x 3`` image (send as ``{"b64": ...}``); same output.

``assets.extra/export_info.json`` records where the weights came from (``imagenet``, a file, or
``untrained``), the input size and the preprocessing mode, so both servers can report them.
``assets.extra/tf_serving_warmup_requests`` holds one batch-1 request per signature, which
TF Serving (and our model server) replays at load before serving the version.

Typical usage::

    python scripts/export_saved_model.py --model scripts/inception.keras --base-path my_image_classifier
    python scripts/export_saved_model.py --if-needed   # make model: only if none, or the latest is outdated
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_server.warmup import predict_log, write_warmup_requests
from serving_contract.export import (INPUT_IMAGE, INPUT_PIXELS_BYTES, OUTPUT_PROBABILITIES, SERVING_BYTES,
                                     SERVING_DEFAULT, SERVING_UINT8, SIGNATURES, WARMUP_REQUESTS_PATH, is_untrained,
                                     read_export_info, write_export_info)
from serving_contract.preprocessing import (CAFFE_MEAN_BGR, DEFAULT_MODE, MODES, TORCH_MEAN, TORCH_STD,
                                            check_mode)
from serving_contract.versions import latest_version, next_version

DEFAULT_PREPROCESSING = DEFAULT_MODE
DEFAULT_MODEL = Path(__file__).resolve().parent / "inception.keras"
DEFAULT_BASE_PATH = Path(__file__).resolve().parents[1] / "my_image_classifier"


class ExportError(RuntimeError):
    """The export cannot go ahead (version exists, bad model); the message says what to do."""


def export_keras_model(model: Any, base_path: str | Path, version: int | None = None, force: bool = False,
                       info: dict | None = None, log: Callable[[str], None] = print) -> Path:
    """Write ``model`` as ``base_path/<version>/`` with the signatures above and return that path.

    ``info["preprocessing"]`` (default ``tf``) is the mode ``serving_uint8`` applies in the graph.
    Raises ExportError if the version exists and ``force`` is false, or for an unknown mode.
    """
    import tensorflow as tf  # imported here so --help and errors stay fast

    info = {"preprocessing": DEFAULT_PREPROCESSING, **(info or {})}
    mode = info["preprocessing"]
    try:
        check_mode(mode)
    except ValueError as exc:
        raise ExportError(str(exc)) from None

    base_path = Path(base_path).resolve()
    base_path.mkdir(parents=True, exist_ok=True)
    version = next_version(base_path) if version is None else int(version)
    if version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    target = base_path / str(version)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to overwrite it or omit --version")

    input_shape = tuple(model.inputs[0].shape[1:])
    if len(input_shape) != 3 or None in input_shape:
        raise ExportError(f"expected a model with a fixed (H, W, C) image input, got {input_shape}")
    height, width, channels = (int(d) for d in input_shape)

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_IMAGE)])
    def serving_default(image):
        return {OUTPUT_PROBABILITIES: model(image, training=False)}

    def images_from(pixels_bytes, dtype):
        return tf.reshape(tf.io.decode_raw(pixels_bytes, dtype, little_endian=True), [-1, height, width, channels])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_PIXELS_BYTES)])
    def serving_bytes(pixels_bytes):
        return {OUTPUT_PROBABILITIES: model(images_from(pixels_bytes, tf.float32), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_PIXELS_BYTES)])
    def serving_uint8(pixels_bytes):
        pixels = images_from(pixels_bytes, tf.uint8)
        return {OUTPUT_PROBABILITIES: model(scale_in_graph(tf, pixels, mode), training=False)}

    module.serving_default = serving_default
    module.serving_bytes = serving_bytes
    module.serving_uint8 = serving_uint8
    signatures = {SERVING_DEFAULT: serving_default, SERVING_BYTES: serving_bytes, SERVING_UINT8: serving_uint8}
    # Track the tf.Variables the signatures capture, not the Keras model: through Keras 3's variable
    # wrappers the SavedModel would restore a second, unused copy of each variable, and a Session
    # loader (tensorflow_model_server, ours) would then find the captured ones uninitialized
    # ("Could not find variable ...": keras-team/keras#20095). Keras' own ExportArchive does the same.
    module.captured_variables = _captured_variables(signatures.values())
    export_info = {
        "input_size": [height, width],
        "channels": channels,
        "classes": int(model.outputs[0].shape[-1]),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "signatures": {
            SERVING_DEFAULT: {"inputs": {INPUT_IMAGE: "float32[batch,H,W,C]"}, "outputs": [OUTPUT_PROBABILITIES]},
            SERVING_BYTES: {"inputs": {INPUT_PIXELS_BYTES: "string[batch] of float32 HWC bytes"},
                            "outputs": [OUTPUT_PROBABILITIES]},
            SERVING_UINT8: {"inputs": {INPUT_PIXELS_BYTES: f"string[batch] of uint8 HWC bytes, scaled in the "
                                                           f"graph ({mode})"},
                            "outputs": [OUTPUT_PROBABILITIES]},
        },
        **info,
    }

    # Hidden and non-numeric, so pollers skip it; on the same filesystem, so the rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=base_path))
    os.chmod(staging, 0o755)
    try:
        log(f"[1/3] tracing signatures {', '.join(signatures)} for input {height}x{width}x{channels}")
        started = time.monotonic()
        tf.saved_model.save(module, str(staging), signatures=signatures)
        write_export_info(staging, export_info)
        write_warmup_requests(staging, warmup_logs(height, width, channels))
        log(f"[2/3] saved in {time.monotonic() - started:.1f} s, {_size_mb(staging):.1f} MB")
        if target.exists():
            # Move the old version aside (one rename) rather than deleting it in place, so a poller
            # never sees a half-deleted version; it is gone only for the instant between renames.
            retired = Path(tempfile.mkdtemp(prefix=f".retired-{version}-", dir=base_path))
            os.rename(target, retired / "old")
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
        log(f"[3/3] version {version} in place at {target}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if is_untrained(info):
        log(_UNTRAINED_WARNING)
    return target


_UNTRAINED_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!! WARNING: this version has UNTRAINED weights: its predictions are meaningless.\n"
    "!! Download ImageNet weights (needs internet) or pass a local weights file to\n"
    "!! scripts/download_inceptionv3_model.py, then export again.\n" + "!" * 78 + "\n"
)


def scale_in_graph(tf: Any, pixels: Any, mode: str) -> Any:
    """``flask_server.preprocess.scale`` as TensorFlow ops: uint8 RGB -> float32 in ``mode``.

    The same float32 operations in the same order as the numpy version (and Keras'
    ``preprocess_input``), so ``serving_uint8`` feeds the model what ``serving_bytes`` would be
    sent by the gateway, up to the last bit (TensorFlow's graph may divide by multiplying with the
    reciprocal); tests/test_export.py checks every mode to 1e-6.
    """
    x = tf.cast(pixels, tf.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    if mode == "caffe":
        return tf.reverse(x, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    return x


def _captured_variables(functions: Any) -> list:
    """The distinct tf.Variables the traced signature functions read, in a stable order."""
    found: dict[int, Any] = {}
    for function in functions:
        for variable in function.get_concrete_function().variables:
            found.setdefault(id(variable), variable)
    return list(found.values())


def warmup_logs(height: int, width: int, channels: int) -> list:
    """One batch-1 PredictionLog per signature, for ``assets.extra/tf_serving_warmup_requests``.

    Replayed at load by our model server and by ``tensorflow_model_server``, so the first client
    request after a (hot) load does not pay for TensorFlow's lazy set-up of each signature.
    """
    import numpy as np

    shape = (height, width, channels)
    return [predict_log(SERVING_DEFAULT, {INPUT_IMAGE: np.zeros((1, *shape), np.float32)}),
            predict_log(SERVING_BYTES, {INPUT_PIXELS_BYTES: np.array([np.zeros(shape, "<f4").tobytes()], object)}),
            predict_log(SERVING_UINT8, {INPUT_PIXELS_BYTES: np.array([np.full(shape, 128, np.uint8).tobytes()], object)})]


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def missing_signatures(version_dir: Path) -> list[str]:
    """The exporter's signatures that an earlier export of ours lacks, from its export_info.

    [] for a SavedModel without our export_info: someone else's model, which is not ours to replace.
    """
    info = read_export_info(version_dir)
    if info is None:
        return []
    listed = info.get("signatures")
    return [name for name in SIGNATURES if name not in (listed if isinstance(listed, dict) else {})]


def export_needed(base_path: Path) -> tuple[bool, str]:
    """Whether ``--if-needed`` should export, and why: no version yet, or the latest is one of ours made
    by an older exporter (without a signature the gateway calls, or without warm-up requests, which
    came with the fix that lets a Session load our exports)."""
    latest = latest_version(base_path)
    if latest is None:
        return True, f"no version under {base_path}"
    missing = missing_signatures(base_path / str(latest))
    if missing:
        return True, (f"version {latest} was exported without {', '.join(missing)} "
                      f"(the gateway calls {SERVING_UINT8} by default)")
    latest_dir = base_path / str(latest)
    if read_export_info(latest_dir) is not None and not (latest_dir / WARMUP_REQUESTS_PATH).is_file():
        return True, (f"version {latest} was exported by an older exporter, whose SavedModels a "
                      f"Session-based server (tensorflow_model_server, the model server) cannot run")
    return False, f"version {latest} needs no new export"


def read_model_info(model_path: Path) -> dict:
    """The sidecar ``<model>.json`` written by the download script (weights origin), or {}."""
    sidecar = model_path.with_name(model_path.name + ".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="saved Keras model (.keras or .h5)")
    parser.add_argument("--base-path", type=Path, default=DEFAULT_BASE_PATH,
                        help="model directory the model server polls (default: my_image_classifier/)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing version")
    parser.add_argument("--if-needed", action="store_true",
                        help="export the next version only if there is none yet or the latest lacks one of "
                             "this exporter's signatures (make model, before make run)")
    parser.add_argument("--preprocessing", default=DEFAULT_PREPROCESSING, choices=MODES,
                        help="keras.applications preprocessing mode the model expects: recorded, and "
                             "applied in the graph by serving_uint8 (default tf)")
    args = parser.parse_args(argv)
    if args.if_needed:
        needed, reason = export_needed(args.base_path)
        if not needed:
            print(f"{args.base_path}: {reason}")
            return 0
        print(f"exporting: {reason}")
    if not args.model.exists():
        print(f"error: {args.model} not found; run scripts/download_inceptionv3_model.py first", file=sys.stderr)
        return 2
    print(f"loading {args.model} ...")
    import keras

    model = keras.models.load_model(args.model, compile=False)
    info = {"model": model.name, "preprocessing": args.preprocessing, "weights": "unknown",
            **read_model_info(args.model)}
    try:
        export_keras_model(model, args.base_path, args.version, args.force, info)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
