"""Build Keras' InceptionV3 (299x299, 1000 ImageNet classes) and save it as ``scripts/inception.keras``.

Weights, in order of preference:

* ``--weights imagenet`` (default): Keras downloads the official ImageNet weights (92 MB, from
  storage.googleapis.com, cached in ``~/.keras/models``) with its own progress bar. Without network
  this fails within a few seconds and names the alternatives.
* ``--weights PATH``: a local weights file, e.g. ``inception_v3_weights_tf_dim_ordering_tf_kernels.h5``
  fetched on another machine from the URL below, or a Keras ``.weights.h5`` file.
* ``--weights none``: untrained (random, fixed seed) weights, for trying the pipeline offline. Every
  prediction is meaningless; the script, the export and the servers all say so.

Why ``.keras``: it is Keras 3's native format, one zip file holding the architecture and the
weights, loadable with ``keras.models.load_model`` without any Python code for the model (the full-
model ``.h5`` format is legacy in Keras 3). ``scripts/export_saved_model.py`` turns it into the
versioned SavedModel the model server reads; the ``.keras`` file stays the source of truth.

Beside the model, ``<output>.json`` records where the weights came from, the input size and the
preprocessing mode (``read_model_info`` in export_saved_model.py copies it into every export).

Typical usage::

    python scripts/download_inceptionv3_model.py                  # ImageNet weights (needs internet)
    python scripts/download_inceptionv3_model.py --weights ~/Downloads/inception_v3_weights_tf_dim_ordering_tf_kernels.h5
    python scripts/download_inceptionv3_model.py --weights none   # offline, untrained
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
from pathlib import Path

from serving_contract.export import UNTRAINED_WEIGHTS

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "inception.keras"
MODEL_NAME = "inception_v3"
INPUT_SIZE = (299, 299)
PREPROCESSING = "tf"
UNTRAINED_SEED = 0
# keras/src/applications/inception_v3.py: WEIGHTS_PATH and the name it caches the file under
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
               "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5")
WEIGHTS_CACHE_NAME = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
CONNECT_TIMEOUT = 5.0  # seconds; DNS included (see _weights_host_reachable)

UNTRAINED_WARNING = "\n".join([
    "",
    "!" * 78,
    "!! WARNING: --weights none builds InceptionV3 with UNTRAINED (random) weights.",
    "!! Every prediction from this model is MEANINGLESS: the labels it returns are noise.",
    "!! Use it only to try the pipeline offline. For real predictions run this script",
    "!! again with network access (--weights imagenet) or with --weights PATH.",
    "!" * 78,
    "",
])


class DownloadError(RuntimeError):
    """The weights cannot be obtained; the message says what to do instead."""


def weights_origin(weights: str) -> str:
    """What the sidecar records: ``imagenet``, ``untrained`` or the absolute weights path."""
    if weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return UNTRAINED_WEIGHTS
    return str(Path(weights).expanduser().resolve())


def build_model(weights: str, log=print):
    """InceptionV3 with ``weights`` (``imagenet``, ``none`` or a file path); raises DownloadError."""
    origin = weights_origin(weights)
    if origin == "imagenet":
        if _cached_weights() is None and not _weights_host_reachable(WEIGHTS_URL, CONNECT_TIMEOUT):
            raise DownloadError(_offline_message())
    elif origin != UNTRAINED_WEIGHTS and not Path(origin).is_file():
        raise DownloadError(f"weights file {origin} not found")

    log("building InceptionV3 ...")
    import keras

    if origin == UNTRAINED_WEIGHTS:
        keras.utils.set_random_seed(UNTRAINED_SEED)
    try:
        return keras.applications.InceptionV3(
            weights=None if origin == UNTRAINED_WEIGHTS else origin, input_shape=(*INPUT_SIZE, 3))
    except Exception as exc:  # Keras' URL fetch failure, a wrong or truncated weights file
        if origin == "imagenet":
            raise DownloadError(f"downloading the ImageNet weights failed ({exc}).\n" + _alternatives()) from exc
        raise DownloadError(f"cannot load weights from {origin}: {exc}") from exc


def save_model(model, output: Path, origin: str) -> Path:
    """Write ``output`` (.keras) and its ``.json`` sidecar; each appears complete or not at all."""
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar = output.with_name(output.name + ".json")
    info = {"weights": origin, "model": MODEL_NAME, "input_size": list(INPUT_SIZE), "preprocessing": PREPROCESSING}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (download, default), 'none' (untrained) or a local weights file")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where to write the model (must end in .keras; default: scripts/inception.keras)")
    args = parser.parse_args(argv)
    if args.output.suffix != ".keras":
        parser.error(f"--output must end in .keras, got {args.output}")

    origin = weights_origin(args.weights)
    if origin == UNTRAINED_WEIGHTS:
        print(UNTRAINED_WARNING, file=sys.stderr)
    started = time.monotonic()
    try:
        model = build_model(args.weights)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_model(model, args.output, origin)
    print(f"saved {args.output} ({args.output.stat().st_size / 1e6:.0f} MB, weights: {origin}) "
          f"in {time.monotonic() - started:.1f} s")
    if origin == UNTRAINED_WEIGHTS:
        print(UNTRAINED_WARNING, file=sys.stderr)
    print(f"next: python scripts/export_saved_model.py --model {args.output}")
    return 0


def _cached_weights() -> Path | None:
    """Keras' cached copy of the ImageNet weights, if a previous run downloaded them."""
    # keras.src.utils.file_utils.get_file: $KERAS_HOME or ~/.keras, or /tmp/.keras if not writable.
    homes = [Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")), Path("/tmp/.keras")]
    for home in homes:
        path = home.expanduser() / "models" / WEIGHTS_CACHE_NAME
        if path.is_file():
            return path
    return None


def _weights_host_reachable(url: str, timeout: float) -> bool:
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


def _alternatives() -> str:
    return ("Alternatives:\n"
            f"  --weights PATH   a local copy of the weights (download {WEIGHTS_URL} elsewhere)\n"
            "  --weights none   untrained weights: the pipeline runs, predictions are meaningless")


def _offline_message() -> str:
    host = WEIGHTS_URL.split("/")[2]
    return f"cannot reach {host} within {CONNECT_TIMEOUT:.0f} s to download the ImageNet weights.\n" + _alternatives()


if __name__ == "__main__":
    sys.exit(main())
