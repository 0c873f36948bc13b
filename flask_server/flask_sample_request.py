"""Send one image to the Flask gateway and print its top-5 predictions as JSON.

Expects the gateway (``cd flask_server && flask run`` or gunicorn) at ``--url``, itself in front of a
model server. By default posts ``{"b64": ...}`` to ``/v1/models/<model>/predict``; ``--tutorial``
posts the tutorial's form field ``b64`` to ``/imageclassifier/predict/`` and prints its bare list.

Typical usage::

    python flask_server/flask_sample_request.py -i test_images/car.jpg
    python flask_server/flask_sample_request.py -i cat.png --url http://10.0.0.5:5000 --tutorial
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import requests

GATEWAY_URL = "http://127.0.0.1:5000"
DEFAULT_MODEL = "imageclassifier"
TUTORIAL_PATH = "/imageclassifier/predict/"
PREDICT_PATH = "/v1/models/{model}/predict"
TIMEOUT_SECONDS = (5, 60)  # (connect, read): the first InceptionV3 call can take a while


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--image", required=True, type=Path, help="image file (JPEG, PNG, WebP, GIF, BMP)")
    parser.add_argument("--url", default=GATEWAY_URL, help=f"gateway base URL (default {GATEWAY_URL})")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model route (default {DEFAULT_MODEL})")
    parser.add_argument("--tutorial", action="store_true",
                        help=f"use the tutorial's form post to {TUTORIAL_PATH}")
    parser.add_argument("--api-key", help="sent as X-API-Key when the gateway requires keys")
    args = parser.parse_args(argv)

    try:
        encoded = base64.b64encode(args.image.read_bytes()).decode("ascii")
    except OSError as exc:
        print(f"error: cannot read {args.image}: {exc}", file=sys.stderr)
        return 1
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    base = args.url.rstrip("/")
    try:
        if args.tutorial:
            response = requests.post(base + TUTORIAL_PATH, data={"b64": encoded}, headers=headers,
                                     timeout=TIMEOUT_SECONDS)
        else:
            response = requests.post(base + PREDICT_PATH.format(model=args.model), json={"b64": encoded},
                                     headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        print(f"error: cannot reach the gateway at {base}: {exc}", file=sys.stderr)
        return 1
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.ok:
        detail = body.get("error") if isinstance(body, dict) else response.text[:500]
        print(f"error: gateway answered {response.status_code}: {detail}", file=sys.stderr)
        return 1
    if body is None:
        print(f"error: gateway answered non-JSON: {response.text[:500]}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
