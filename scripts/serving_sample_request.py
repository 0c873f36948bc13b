"""Classify one image by calling the model server directly (no gateway) and print the top 5.

Talks to TF Serving's REST API, served by ``python -m model_server`` (port 9000 under ``make run``)
or by Google's ``tensorflow_model_server``. The image is preprocessed exactly as the gateway does
it (``flask_server.preprocess``: 299x299, ``tf`` scaling) and sent through the gateway's own
client code (``flask_server.served_model.ServedModel``), so this script and the gateway cannot disagree:

* ``--signature serving_uint8`` (default): ``{"signature_name": "serving_uint8", "instances":
  [{"pixels_bytes": {"b64": <uint8 HWC bytes>}}]}``, 357 KB of base64 per image, scaled in the graph;
* ``--signature serving_bytes``: the same with the float32 bytes of the scaled image, 1.4 MB;
* ``--signature serving_default``: ``{"instances": [{"image": [[[r, g, b], ...]]}]}``, float JSON.

With ``--grpc HOST:PORT`` it calls TF Serving's gRPC API instead (``PredictionService/Predict``,
port 8500 under ``make run``), through the gateway's TensorFlow-free gRPC transport
(``flask_server.grpc_transport``): the pixels go as raw bytes in a DT_STRING tensor (the
``*_bytes`` signatures) or as a float32 tensor, and the same top 5 comes back.

Prints ``[["n04285008", "sports_car", 0.998414], ...]`` (wnid, label, score rounded to 6 decimals),
like ``keras.applications.inception_v3.decode_predictions``. On failure prints one ``error:`` line
(the model server's own ``error`` message when it sent one) and exits 1.

Typical usage::

    python scripts/serving_sample_request.py -i test_images/chelsea.jpg
    python scripts/serving_sample_request.py -i photo.jpg --url http://127.0.0.1:8501 --signature serving_default
    python scripts/serving_sample_request.py --grpc 127.0.0.1:8500 -i test_images/chelsea.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving_contract.export import DEFAULT_MODEL_NAME, SERVING_BYTES, SERVING_DEFAULT, SERVING_UINT8

DEFAULT_URL = "http://127.0.0.1:9000"
DEFAULT_MODEL = DEFAULT_MODEL_NAME
DEFAULT_SIGNATURE = SERVING_UINT8
SIGNATURES = (SERVING_UINT8, SERVING_BYTES, SERVING_DEFAULT)  # the --signature choices, default first
TOP_K = 5
SCORE_DECIMALS = 6
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0  # the first predict after loading InceptionV3 can take a few seconds


def classify(image_path: Path, url: str, model: str, signature: str, top: int = TOP_K) -> tuple[list, str | None]:
    """``([[wnid, label, score], ...], warning or None)`` for one image; raises the gateway's
    BadRequest (not an image) / BackendError / ConfigError on failure.

    ``url`` is the REST base URL, or ``grpc://host:port`` for the gRPC API.
    """
    from flask_server.config import GatewayConfig
    from flask_server.labels import load_labels
    from flask_server.model_config import spec_from_table
    from flask_server.registry import open_transport
    from flask_server.served_model import ServedModel

    # The gateway's own defaults: each signature's input format (model_config.signature_defaults),
    # and the protocol the URL names (model_config.protocol_of), with the gateway's choice of transport.
    spec = spec_from_table("cli", {"model_name": model, "signature": signature}, Path("command line"), url)
    config = GatewayConfig(backend_connect_timeout=CONNECT_TIMEOUT, backend_timeout=READ_TIMEOUT)
    served = ServedModel(spec, load_labels(spec.labels), open_transport(spec, config))
    prediction = served.classify([image_path.read_bytes()], top)
    rows = [[row["wnid"], row["label"], round(row["score"], SCORE_DECIMALS)] for row in prediction.top_k[0]]
    return rows, prediction.warning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--image", type=Path, required=True, help="image file (JPEG, PNG, WebP, GIF, BMP)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"model server REST base URL (default {DEFAULT_URL})")
    parser.add_argument("--grpc", metavar="HOST:PORT",
                        help="call the model server's gRPC API at HOST:PORT (e.g. 127.0.0.1:8500) instead of --url")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE, choices=SIGNATURES,
                        help=f"signature to call (default {DEFAULT_SIGNATURE})")
    args = parser.parse_args(argv)

    from flask_server.config import ConfigError
    from flask_server.errors import BadRequest, GatewayError
    from flask_server.config import GRPC_URL_SCHEME

    try:
        url = GRPC_URL_SCHEME + args.grpc if args.grpc else args.url.rstrip("/")
        rows, warning = classify(args.image, url, args.model, args.signature)
    except OSError as exc:
        print(f"error: cannot read {args.image}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BadRequest as exc:  # the image cannot be decoded
        print(f"error: {args.image}: {exc}", file=sys.stderr)
        return 1
    except (GatewayError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
