"""What each way of sending pixels to the model server costs, side by side, with no model.

The gateway can call three signatures of an export (scripts/export_saved_model.py), each with its own
input format (flask_server/model_config.py ``KNOWN_SIGNATURES``). The image decode and resize are the same
for all three, so they are left out; this measures what differs, with the project's own code:

* ``gateway``: ``model_input`` (numpy ``preprocess_input``, skipped for ``serving_uint8``) and
  ``encode_predict_request`` (the request body), as the gateway calls them;
* ``body``: the request's size;
* ``model server``: ``parse_predict_body`` + ``request_to_tensors`` (model_server/predict_codec.py), what
  the model server does before TensorFlow runs (TensorFlow's own decode_raw/cast is not included).

Every round runs each format once, in turn, so background load hits them about equally; the table
gives medians and the ratio of each total to ``serving_uint8``'s.

Typical usage::

    python -m bench.wire                 # the benchmark's 2 MP JPEG at 299x299, 200 rounds
    python -m bench.wire --rounds 50 --size 224
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.images import image_paths
from flask_server.model_config import JSON_FLOATS, KNOWN_SIGNATURES, ModelSpec
from flask_server.preprocess import load_pixels
from flask_server.wire_format import encode_predict_request, model_input
from model_server.predict_codec import parse_predict_body, request_to_tensors
from model_server.tensor_types import TensorSpec
from serving_contract.export import PROBABILITIES_SIGNATURES, SERVING_UINT8

BASELINE = SERVING_UINT8


def _server_inputs(spec: ModelSpec) -> dict[str, TensorSpec]:
    """The signature's input as the model server sees it: a float image or a batch of strings."""
    if spec.input_format == JSON_FLOATS:
        return {spec.input_name: TensorSpec("DT_FLOAT", (None, *spec.input_size, 3))}
    return {spec.input_name: TensorSpec("DT_STRING", (None,))}


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def measure(pixels: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """Median gateway ms, body KB and model server ms per signature, for one uint8 (H, W, 3) image."""
    height, width = pixels.shape[:2]
    specs = {}
    for signature, (input_format, input_name) in KNOWN_SIGNATURES.items():
        if signature not in PROBABILITIES_SIGNATURES:
            continue  # serving_topk: serving_uint8's request format, plus k
        specs[signature] = ModelSpec(route="wire", model_server_url="http://unused", signature=signature,
                                     input_name=input_name, input_format=input_format, input_size=(height, width))
    samples: dict[str, dict[str, list[float]]] = {s: {"gateway": [], "server": []} for s in specs}
    sizes: dict[str, int] = {}
    batch = pixels[None]
    for _ in range(rounds):
        for signature, spec in specs.items():
            gateway_ms, body = _timed(lambda spec=spec: encode_predict_request(spec, model_input(spec, batch)))
            server_ms, _ = _timed(lambda body=body, spec=spec: request_to_tensors(
                parse_predict_body(body), _server_inputs(spec)))
            samples[signature]["gateway"].append(gateway_ms)
            samples[signature]["server"].append(server_ms)
            sizes[signature] = len(body)
    return {signature: {"gateway_ms": statistics.median(times["gateway"]), "body_kb": sizes[signature] / 1000,
                        "server_ms": statistics.median(times["server"])}
            for signature, times in samples.items()}


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per signature, totals as ratios to ``serving_uint8``."""
    base = results[BASELINE]["gateway_ms"] + results[BASELINE]["server_ms"]
    lines = ["| signature | gateway ms (scale + body) | body KB | model server ms (parse + tensors) "
             "| total ms | total / serving_uint8 |", "|---|---|---|---|---|---|"]
    for signature, row in results.items():
        total = row["gateway_ms"] + row["server_ms"]
        lines.append(f"| {signature} | {row['gateway_ms']:.2f} | {row['body_kb']:.0f} | {row['server_ms']:.2f} "
                     f"| {total:.2f} | {total / base:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=image_paths()[0], help="image file (default: the bench JPEG)")
    parser.add_argument("--size", type=int, default=299, help="square input size in pixels (default 299)")
    parser.add_argument("--rounds", type=int, default=200, help="rounds, each running every format once")
    args = parser.parse_args(argv)
    pixels = load_pixels(args.image.read_bytes(), (args.size, args.size))
    results = measure(pixels, args.rounds)
    print(f"# wire formats: {args.image.name} at {args.size}x{args.size}, {args.rounds} rounds, medians\n")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
