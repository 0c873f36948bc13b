"""Export a saved Keras image classifier as the next version of a TF Serving model directory.

Writes ``<base_path>/<N>/`` (a SavedModel) where N is the next free integer version, or ``--version``.
The version is written into a hidden temporary directory beside it and renamed into place, so a
model server polling ``base_path`` never sees a half-written version.

Any image classifier works: one input ``[batch, H, W, 3]`` with a fixed size (read from the model)
and one output ``[batch, classes]``. Its class names come from ``--labels`` (a file, one class a
line in output order, or ``imagenet``); a ``keras.applications`` model from download_model.py
gets ImageNet's. The preprocessing mode comes from ``--preprocessing``, else the model's sidecar
(``<model>.json``, written by download_model.py), else ``tf``.

Signatures (stable names, defined in ``serving_contract.export``, documented in the README):

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
* ``serving_topk``: ``pixels_bytes`` as for ``serving_uint8`` plus ``k`` int32 ``[batch]``; outputs
  ``scores``, ``class_index``, ``class_id`` and ``class_label`` ``[batch, k]``: labelled answers
  from the SavedModel alone, for clients of the real ``tensorflow_model_server``.

``assets.extra/export_info.json`` records the model name, input size, preprocessing mode, the
labels (id and label in output order) and where the weights came from, so both servers can report
them; the labels are also the SavedModel asset ``assets/labels.txt``.
``assets.extra/tf_serving_warmup_requests`` holds one batch-1 request per signature, which
TF Serving (and our model server) replays at load before serving the version.

Typical usage::

    python scripts/export_saved_model.py --model scripts/inception.keras --base-path my_image_classifier
    python scripts/export_saved_model.py --model my_model.keras --labels labels.txt --preprocessing none
    python scripts/export_saved_model.py --if-needed   # make model: only if none, or the latest is outdated
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_server.warmup import predict_log, write_warmup_requests
from scripts.export_signatures import serving_signatures, signatures_info, warmup_inputs
from scripts.model_sidecar import read_model_info
from serving_contract.applications import APPLICATIONS
from serving_contract.export import (CLASSES_KEY, CUSTOM_MODEL, INPUT_SIZE_KEY, LABELS_ASSET_PATH, LABELS_KEY,
                                     MODEL_KEY, PREPROCESSING_KEY, SERVING_UINT8, SIGNATURES, WARMUP_REQUESTS_PATH,
                                     WEIGHTS_KEY, is_untrained, read_export_info, write_export_info)
from serving_contract.labels import (IMAGENET, IMAGENET_CLASSES, Label, LabelsError, format_labels_text,
                                     imagenet_labels, labels_to_info, read_labels_file)
from serving_contract.preprocessing import DEFAULT_MODE, MODES, check_mode
from serving_contract.versions import latest_version, next_version

DEFAULT_PREPROCESSING = DEFAULT_MODE
DEFAULT_MODEL = Path(__file__).resolve().parent / "inception.keras"
DEFAULT_BASE_PATH = Path(__file__).resolve().parents[1] / "my_image_classifier"


class ExportError(RuntimeError):
    """The export cannot go ahead (version exists, bad model); the message says what to do."""


class NotAnImageClassifierError(ExportError):
    """The model, or its labels, do not fit an image classifier export (``main`` exits 2)."""


def classifier_shape(model: Any) -> tuple[int, int, int]:
    """(height, width, classes) of an image classifier: one input [batch, H, W, 3], one output [batch, classes].

    Raises NotAnImageClassifierError naming what is wrong otherwise.
    """
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise NotAnImageClassifierError(f"not an image classifier: expected one input and one output, got "
                                        f"{len(inputs)} inputs and {len(outputs)} outputs")
    input_shape, output_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3 or None in input_shape[1:]:
        raise NotAnImageClassifierError(f"not an image classifier: expected a fixed-size RGB image input "
                                        f"[batch, H, W, 3], got {_shape_text(input_shape)}")
    if len(output_shape) != 2 or output_shape[1] is None:
        raise NotAnImageClassifierError(f"not an image classifier: expected an output [batch, classes], "
                                        f"got {_shape_text(output_shape)}")
    return int(input_shape[1]), int(input_shape[2]), int(output_shape[1])


def model_name(name: Any) -> str:
    """``export_info["model"]``: the ``keras.applications`` name for ``name``, or ``custom``.

    Also accepts a Keras model's own name (``inception_v3``, ``resnet50``): case, ``_`` and ``-`` aside.
    """
    if not isinstance(name, str):
        return CUSTOM_MODEL
    squeezed = {key.lower(): key for key in APPLICATIONS}
    return squeezed.get(name.lower().replace("_", "").replace("-", ""), CUSTOM_MODEL)


def resolve_labels(labels: Sequence[Label] | None, model: str, classes: int,
                   log: Callable[[str], None] = print) -> list[Label]:
    """The (id, label) pairs an export carries, one per class.

    Given ``labels`` must number ``classes`` (NotAnImageClassifierError otherwise). Without them: a
    ``keras.applications`` model, or any 1000-class model, gets ImageNet's in Keras' order; other
    models get their output indices as ids and labels, with a note.
    """
    if labels is None and (model in APPLICATIONS or classes == IMAGENET_CLASSES):
        labels = imagenet_labels()
    if labels is None:
        log(f"note: no --labels given; the {classes} classes are named by their output index")
        return [(str(i), str(i)) for i in range(classes)]
    if len(labels) != classes:
        raise NotAnImageClassifierError(f"the model has {classes} classes but there are {len(labels)} labels")
    return list(labels)


def export_keras_model(model: Any, base_path: str | Path, version: int | None = None, force: bool = False,
                       info: dict | None = None, log: Callable[[str], None] = print,
                       labels: Sequence[Label] | None = None) -> Path:
    """Write ``model`` as ``base_path/<version>/`` with the signatures above and return that path.

    ``info`` is copied into export_info: ``preprocessing`` (default ``tf``) is the mode
    ``serving_uint8`` and ``serving_topk`` apply in the graph, ``model`` becomes the
    ``keras.applications`` name or ``custom``. ``labels`` as for ``resolve_labels``.
    Raises NotAnImageClassifierError for a model or labels that do not fit, ExportError if the
    version exists and ``force`` is false, or for an unknown mode.
    """
    info = {PREPROCESSING_KEY: DEFAULT_PREPROCESSING, **(info or {})}
    mode = info[PREPROCESSING_KEY]
    try:
        check_mode(mode)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    height, width, classes = classifier_shape(model)
    info[MODEL_KEY] = model_name(info.get(MODEL_KEY))
    labels = resolve_labels(labels, info[MODEL_KEY], classes, log)
    try:
        labels_text = format_labels_text(labels)
    except LabelsError as exc:
        raise NotAnImageClassifierError(str(exc)) from None

    base_path = Path(base_path).resolve()
    base_path.mkdir(parents=True, exist_ok=True)
    version = next_version(base_path) if version is None else int(version)
    if version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    target = base_path / str(version)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to overwrite it or omit --version")

    import tensorflow as tf  # imported here so --help and errors stay fast

    export_info = {
        **info,
        INPUT_SIZE_KEY: [height, width],
        "channels": 3,
        CLASSES_KEY: classes,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "signatures": signatures_info(mode),
        LABELS_KEY: labels_to_info(labels),
    }

    # Hidden and non-numeric, so pollers skip it; on the same filesystem, so the rename is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=base_path))
    os.chmod(staging, 0o755)
    try:
        with tempfile.TemporaryDirectory(prefix=".labels-", dir=base_path) as labels_dir:
            module = tf.Module()
            signatures = serving_signatures(tf, model, mode, labels)
            for name, function in signatures.items():
                setattr(module, name, function)
            # Track the tf.Variables the signatures capture, not the Keras model: through Keras 3's
            # variable wrappers the SavedModel would restore a second, unused copy of each, and a Session
            # loader (tensorflow_model_server, ours) would find the captured ones uninitialized ("Could
            # not find variable ...": keras-team/keras#20095). Keras' own ExportArchive does the same.
            module.captured_variables = _captured_variables(signatures.values())
            labels_file = Path(labels_dir) / LABELS_ASSET_PATH.name
            labels_file.write_text(labels_text, encoding="utf-8")
            module.labels_asset = tf.saved_model.Asset(str(labels_file))  # copied to assets/labels.txt
            log(f"[1/3] tracing signatures {', '.join(signatures)} for input {height}x{width}x3, {classes} classes")
            started = time.monotonic()
            tf.saved_model.save(module, str(staging), signatures=signatures)
        write_export_info(staging, export_info)
        write_warmup_requests(staging, [predict_log(name, inputs)
                                        for name, inputs in warmup_inputs(height, width, 3).items()])
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
    "!! scripts/download_model.py, then export again.\n" + "!" * 78 + "\n"
)


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("batch" if i == 0 and d is None else str(d) for i, d in enumerate(shape)) + "]"


def _captured_variables(functions: Any) -> list:
    """The distinct tf.Variables the traced signature functions read, in a stable order."""
    found: dict[int, Any] = {}
    for function in functions:
        for variable in function.get_concrete_function().variables:
            found.setdefault(id(variable), variable)
    return list(found.values())


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
    by an older exporter (without a signature, or without warm-up requests, which came with the fix
    that lets a Session load our exports)."""
    latest = latest_version(base_path)
    if latest is None:
        return True, f"no version under {base_path}"
    missing = missing_signatures(base_path / str(latest))
    if missing:
        why = f" (the gateway calls {SERVING_UINT8} by default)" if SERVING_UINT8 in missing else ""
        return True, f"version {latest} was exported without {', '.join(missing)}{why}"
    latest_dir = base_path / str(latest)
    if read_export_info(latest_dir) is not None and not (latest_dir / WARMUP_REQUESTS_PATH).is_file():
        return True, (f"version {latest} was exported by an older exporter, whose SavedModels a "
                      f"Session-based server (tensorflow_model_server, the model server) cannot run")
    return False, f"version {latest} needs no new export"


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
    parser.add_argument("--preprocessing", choices=MODES,
                        help="keras.applications preprocessing mode the model expects: recorded, and applied "
                             "in the graph by serving_uint8 and serving_topk (default: the model's sidecar, "
                             f"else {DEFAULT_PREPROCESSING})")
    parser.add_argument("--labels",
                        help="class names: a file with one class a line in output order ('label', or "
                             "'id<TAB>label'), or 'imagenet' (default: ImageNet's for a keras.applications "
                             "or 1000-class model, else the output indices)")
    args = parser.parse_args(argv)
    if args.if_needed:
        needed, reason = export_needed(args.base_path)
        if not needed:
            print(f"{args.base_path}: {reason}")
            return 0
        print(f"exporting: {reason}")
    if not args.model.exists():
        print(f"error: {args.model} not found; run scripts/download_model.py first", file=sys.stderr)
        return 2
    try:
        labels = None if args.labels is None else load_labels_option(args.labels)
    except LabelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loading {args.model} ...")
    import keras

    model = keras.models.load_model(args.model, compile=False)
    info = export_info_from(read_model_info(args.model), args.preprocessing)
    try:
        export_keras_model(model, args.base_path, args.version, args.force, info, labels=labels)
    except NotAnImageClassifierError as exc:
        print(f"error: {args.model}: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def load_labels_option(value: str) -> list[Label]:
    """``--labels``: ``imagenet`` or a labels file; LabelsError if the file is unreadable or empty."""
    return list(imagenet_labels()) if value == IMAGENET else read_labels_file(value)


def export_info_from(sidecar: dict[str, Any], preprocessing: str | None) -> dict[str, Any]:
    """The export info a .keras file starts with: its sidecar, ``--preprocessing`` winning over it.

    Without either, a ``keras.applications`` model gets its own mode and anything else ``tf``.
    """
    name = model_name(sidecar.get(MODEL_KEY))
    table_mode = APPLICATIONS[name].preprocessing if name in APPLICATIONS else DEFAULT_PREPROCESSING
    recorded = sidecar.get(PREPROCESSING_KEY, table_mode)
    if preprocessing is not None and preprocessing != recorded and PREPROCESSING_KEY in sidecar:
        print(f"note: --preprocessing {preprocessing} overrides the sidecar's {recorded}")
    return {WEIGHTS_KEY: "unknown", **sidecar, MODEL_KEY: name, PREPROCESSING_KEY: preprocessing or recorded}


if __name__ == "__main__":
    sys.exit(main())
