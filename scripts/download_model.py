"""Build a ``keras.applications`` ImageNet classifier by its Keras name and save it as a ``.keras`` file.

Any classifier in ``serving_contract.applications`` (InceptionV3, MobileNetV2, ResNet50,
EfficientNetB0, DenseNet121, ConvNeXtTiny, ... 40 in all), at the input size its ImageNet weights
were trained at. Weights, in order of preference:

* ``--weights imagenet`` (default): Keras downloads the official ImageNet weights (from
  storage.googleapis.com, cached in ``~/.keras/models``) with its own progress bar. Without network
  this fails within a few seconds and names the alternatives.
* ``--weights PATH``: a local weights file, e.g. the ``.h5`` file Keras would download, fetched on
  another machine from the URL the offline message prints, or a Keras ``.weights.h5`` file.
* ``--weights none``: untrained (random, fixed seed) weights, for trying the pipeline offline. Every
  prediction is meaningless; the script, the export and the servers all say so.

Why ``.keras``: it is Keras 3's native format, one zip file holding the architecture and the
weights, loadable with ``keras.models.load_model`` without any Python code for the model (the full-
model ``.h5`` format is legacy in Keras 3). ``scripts/export_saved_model.py`` turns it into the
versioned SavedModel the model server reads; the ``.keras`` file stays the source of truth.

Beside the model, the sidecar ``<output>.json`` (scripts/model_sidecar.py) records the model name,
input size, preprocessing mode (``tf``, ``caffe``, ``torch``, or ``none`` where the model rescales
in its own graph) and where the weights came from; the exporter copies it into every export.

Typical usage::

    python scripts/download_model.py --model MobileNetV2                       # ImageNet weights (needs internet)
    python scripts/download_model.py --model MobileNetV2 --weights ~/Downloads/mobilenet_v2_weights.h5
    python scripts/download_model.py --model ResNet50 --weights none --output resnet50.keras   # offline, untrained
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.model_sidecar import sidecar_path
from serving_contract.applications import APPLICATIONS, Application, find_application
from serving_contract.export import INPUT_SIZE_KEY, MODEL_KEY, PREPROCESSING_KEY, UNTRAINED_WEIGHTS, WEIGHTS_KEY

SCRIPTS_DIR = Path(__file__).resolve().parent
IMAGENET_WEIGHTS = "imagenet"
UNTRAINED_SEED = 0
CONNECT_TIMEOUT = 5.0  # seconds; DNS included (see weights_host_reachable)


class DownloadError(RuntimeError):
    """The weights cannot be obtained; the message says what to do instead."""


def default_output(app: Application) -> Path:
    """``scripts/<name lowercased>.keras``."""
    return SCRIPTS_DIR / f"{app.name.lower()}.keras"


def weights_origin(weights: str) -> str:
    """What the sidecar records: ``imagenet``, ``untrained`` or the absolute weights path."""
    if weights == IMAGENET_WEIGHTS:
        return IMAGENET_WEIGHTS
    if weights.lower() == "none":
        return UNTRAINED_WEIGHTS
    return str(Path(weights).expanduser().resolve())


def untrained_warning(app: Application) -> str:
    """The banner printed before and after building untrained weights."""
    return "\n".join([
        "",
        "!" * 78,
        f"!! WARNING: --weights none builds {app.name} with UNTRAINED (random) weights.",
        "!! Every prediction from this model is MEANINGLESS: the labels it returns are noise.",
        "!! Use it only to try the pipeline offline. For real predictions run this script",
        "!! again with network access (--weights imagenet) or with --weights PATH.",
        "!" * 78,
        "",
    ])


def build_model(app: Application, weights: str, log: Callable[[str], None] = print) -> Any:
    """``keras.applications.<app.name>`` with ``weights`` (``imagenet``, ``none`` or a file); raises DownloadError."""
    origin = weights_origin(weights)
    if origin == IMAGENET_WEIGHTS:
        if cached_weights(app) is None and not weights_host_reachable(app.weights_url, CONNECT_TIMEOUT):
            raise DownloadError(_offline_message(app))
    elif origin != UNTRAINED_WEIGHTS and not Path(origin).is_file():
        raise DownloadError(f"weights file {origin} not found")

    log(f"building {app.name} ...")
    import keras

    if origin == UNTRAINED_WEIGHTS:
        keras.utils.set_random_seed(UNTRAINED_SEED)
    constructor = getattr(keras.applications, app.name)
    try:
        return constructor(weights=None if origin == UNTRAINED_WEIGHTS else origin, input_shape=(*app.input_size, 3))
    except Exception as exc:  # Keras' URL fetch failure, a wrong or truncated weights file
        if origin == IMAGENET_WEIGHTS:
            raise DownloadError(f"downloading the ImageNet weights failed ({exc}).\n" + _alternatives(app)) from exc
        raise DownloadError(f"cannot load weights from {origin} into {app.name}: {exc}") from exc


def model_info(app: Application, origin: str) -> dict[str, Any]:
    """The sidecar's content for ``app`` built with weights from ``origin``."""
    return {WEIGHTS_KEY: origin, MODEL_KEY: app.name, INPUT_SIZE_KEY: list(app.input_size),
            PREPROCESSING_KEY: app.preprocessing}


def save_model(model: Any, output: Path, info: dict[str, Any]) -> Path:
    """Write ``output`` (.keras) and its ``.json`` sidecar holding ``info``; each appears complete or not at all."""
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(output)
    partial_sidecar = sidecar.with_name(f".{sidecar.name}.partial")
    partial_model = output.with_name(f".{output.stem}.partial{output.suffix}")  # save() wants the suffix
    try:
        partial_sidecar.write_text(json.dumps(info, indent=2) + "\n")
        model.save(partial_model)
        # Sidecar first: `make` treats an existing .keras file as done, so it must never lack one.
        os.replace(partial_sidecar, sidecar)
        os.replace(partial_model, output)
    finally:
        partial_sidecar.unlink(missing_ok=True)
        partial_model.unlink(missing_ok=True)
    return output


def download(app: Application, weights: str, output: Path) -> int:
    """Build ``app`` with ``weights``, save it to ``output`` with its sidecar; the exit status (0 or 1)."""
    origin = weights_origin(weights)
    if origin == UNTRAINED_WEIGHTS:
        print(untrained_warning(app), file=sys.stderr)
    started = time.monotonic()
    try:
        model = build_model(app, weights)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_model(model, output, model_info(app, origin))
    print(f"saved {output} ({output.stat().st_size / 1e6:.0f} MB, {app.name}, weights: {origin}) "
          f"in {time.monotonic() - started:.1f} s")
    if origin == UNTRAINED_WEIGHTS:
        print(untrained_warning(app), file=sys.stderr)
    print(f"next: python scripts/export_saved_model.py --model {output}")
    return 0


def add_weights_and_output_flags(parser: argparse.ArgumentParser, output_help: str) -> None:
    """``--weights`` and ``--output``, shared with download_inceptionv3_model.py."""
    parser.add_argument("--weights", default=IMAGENET_WEIGHTS,
                        help="'imagenet' (download, default), 'none' (untrained) or a local weights file")
    parser.add_argument("--output", type=Path, help=f"where to write the model (must end in .keras; {output_help})")


def checked_output(parser: argparse.ArgumentParser, output: Path) -> Path:
    """``output``, or a usage error (exit 2) unless it ends in ``.keras``."""
    if output.suffix != ".keras":
        parser.error(f"--output must end in .keras, got {output}")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="NAME",
                        help=f"keras.applications name, one of: {', '.join(APPLICATIONS)}")
    add_weights_and_output_flags(parser, "default: scripts/<model name lowercased>.keras")
    args = parser.parse_args(argv)
    try:
        app = find_application(args.model)
    except KeyError as exc:
        parser.error(exc.args[0])
    return download(app, args.weights, checked_output(parser, args.output or default_output(app)))


def cached_weights(app: Application) -> Path | None:
    """Keras' cached copy of ``app``'s ImageNet weights, if a previous run downloaded them."""
    # keras.src.utils.file_utils.get_file: $KERAS_HOME or ~/.keras, or /tmp/.keras if not writable.
    homes = [Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")), Path("/tmp/.keras")]
    for home in homes:
        path = home.expanduser() / "models" / app.weights_file
        if path.is_file():
            return path
    return None


def weights_host_reachable(url: str, timeout: float) -> bool:
    """Whether a HEAD request to ``url`` answers within ``timeout`` (honours HTTPS_PROXY).

    Runs in a daemon thread because name resolution ignores socket timeouts and can hang for
    much longer than ``timeout`` on a machine without DNS.
    """
    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()  # the host answered; Keras will report any real problem
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return answered.is_set()


def _alternatives(app: Application) -> str:
    return ("Alternatives:\n"
            f"  --weights PATH   a local copy of the weights (download {app.weights_url} elsewhere)\n"
            "  --weights none   untrained weights: the pipeline runs, predictions are meaningless")


def _offline_message(app: Application) -> str:
    return (f"cannot reach {app.weights_host} within {CONNECT_TIMEOUT:.0f} s to download the ImageNet weights "
            f"of {app.name}.\n" + _alternatives(app))


if __name__ == "__main__":
    sys.exit(main())
