"""The gateway's two fast paths side by side: ``serving_topk`` against ``serving_uint8``.

Since the gateway learns each version's signature from the model server (flask_server/model_metadata.py),
it calls ``serving_topk`` when the export has it: the same uint8 pixels in, the top k classes with
their names out, ranked in the graph. ``serving_uint8`` (stated in MODELS_CONFIG here) answers all
the probabilities, which the gateway ranks itself. One model server and one gateway serve both
routes; one client calls them in turn (``bench.load.run_round_robin``), so background load hits
both alike. Printed: median and p90 latency per route, the ratio to ``serving_uint8``, and the size
of the model server's reply to each signature.

Typical usage::

    python -m bench.gateway_signatures                     # InceptionV3 (untrained), 60 requests a route
    python -m bench.gateway_signatures --kind tiny --requests 20
    python -m bench.gateway_signatures --model-base-path my_image_classifier --requests 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests

from bench.images import image_paths, preprocess
from bench.load import run_round_robin
from bench.models import KINDS, export_in_subprocess, input_size, latest_version
from bench.paths import JSON_HEADERS, TIMEOUT, TOP_K, gateway_send
from bench.servers import gateway, model_server
from flask_server.model_config import ModelSpec
from flask_server.wire_format import encode_predict_request
from serving_contract.export import DEFAULT_MODEL_NAME, SERVING_TOPK, SERVING_UINT8

#: route -> the signature it calls; the topk route states nothing, as a user's entry would.
ROUTES = {"topk": SERVING_TOPK, "uint8": SERVING_UINT8}
BASELINE = "uint8"
TIME_LIMIT_S = 900.0


def models_config(path: Path, model_name: str) -> Path:
    """MODELS_CONFIG with both routes on the same model: one learned, one stating serving_uint8."""
    path.write_text(f'[models.topk]\nmodel_name = "{model_name}"\n\n'
                    f'[models.uint8]\nmodel_name = "{model_name}"\nsignature = "{SERVING_UINT8}"\n')
    return path


def reply_bytes(model_server_url: str, model_name: str, image: bytes, size: tuple[int, int]) -> dict[str, int]:
    """How many bytes the model server answers to one image, per signature (top_k = 5 for serving_topk)."""
    pixels = preprocess(image, size)[None]
    sizes = {}
    for route, signature in ROUTES.items():
        spec = ModelSpec(route=route, model_server_url=model_server_url, model_name=model_name, signature=signature,
                         input_size=size)
        response = requests.post(f"{model_server_url}/v1/models/{model_name}:predict",
                                 data=encode_predict_request(spec, pixels, TOP_K), headers=JSON_HEADERS,
                                 timeout=TIMEOUT)
        response.raise_for_status()
        sizes[route] = len(response.content)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, default="inception", help="model to export (%(default)s)")
    parser.add_argument("--model-base-path", type=Path, help="serve this exported model instead of exporting one")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per route (%(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-signatures-") as tmp:
        work = Path(tmp)
        base_path = args.model_base_path.resolve() if args.model_base_path else work / DEFAULT_MODEL_NAME
        if args.model_base_path is None:
            export_in_subprocess(args.kind, base_path)
        size = input_size(latest_version(base_path))
        images = [path.read_bytes() for path in image_paths()]
        with model_server("model server", DEFAULT_MODEL_NAME, base_path, work) as ms, \
                gateway("gateway", ms.url, work, models_config=models_config(work / "models.toml",
                                                                             DEFAULT_MODEL_NAME)) as gw:
            sizes = reply_bytes(ms.url, DEFAULT_MODEL_NAME, images[0], size)
            sends = {route: gateway_send(gw.url, route, images) for route in ROUTES}
            results = run_round_robin(sends, dict.fromkeys(ROUTES, args.requests), TIME_LIMIT_S, warmup=3)
    print(f"# gateway: serving_topk vs serving_uint8 | {base_path.name} {size[0]}x{size[1]} | "
          f"{args.requests} requests a route, 1 client, interleaved\n")
    print("| route | signature | p50 ms | p90 ms | p50 / serving_uint8 p50 | model server reply bytes | errors |")
    print("|---|---|---|---|---|---|---|")
    baseline = results[BASELINE].p(50)
    for route, signature in ROUTES.items():
        result = results[route]
        print(f"| {route} | {signature} | {result.p(50):.1f} | {result.p(90):.1f} | {result.p(50) / baseline:.2f}x | "
              f"{sizes[route]} | {result.errors} |")
    return 1 if any(result.errors for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
