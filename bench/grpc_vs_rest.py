"""REST vs gRPC to the model server, side by side: a direct client, and the gateway's hop.

One model server serves the export over REST and gRPC (``--port``); two gateways run in front of it,
identical but for the protocol of their hop (the second gets ``MODEL_SERVER_URL=grpc://...``, so
its route uses ``flask_server/grpc_transport.py``). Four paths, each checked on every request:

* ``direct REST``: the client decodes and resizes, then ``serving_uint8`` predict with the uint8
  pixels as ``{"b64": ...}`` JSON (bench/paths.py ``model_server_send``);
* ``direct gRPC``: the same pixels as one DT_STRING tensor in a PredictRequest, written with the
  gateway's TensorFlow-free messages (flask_server/grpc_messages.py) over one gRPC channel;
* ``gateway (REST hop)`` / ``gateway (gRPC hop)``: the same client request (an encoded image file
  as ``{"b64": ...}``) to each gateway.

Latency at 1 client interleaves the four paths (bench/load.py ``run_round_robin``); throughput at
16 clients runs each path in turn, in A B B A order over the pairs. Bytes per image are what one
predict puts on the model server hop, request + reply, measured from the bodies the code sends.
Last, each gateway's cold start (spawn to /readyz 200) and its workers' resident memory.

Typical usage::

    python -m bench.grpc_vs_rest            # InceptionV3 (weights=None), ~3 minutes
    python -m bench.grpc_vs_rest --tiny     # the tiny model: the transport's own cost shows
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import orjson
import pybase64
import requests

from bench.images import image_paths, preprocess
from bench.load import LoadResult, Send, run_load, run_round_robin
from bench.models import export_in_subprocess, gateway_models_config, input_size, latest_version
from bench.paths import JSON_HEADERS, TIMEOUT, check_probabilities, gateway_send, model_server_send
from bench.servers import HOST, gateway, model_server
from flask_server import grpc_messages as messages
from flask_server.config import GRPC_URL_SCHEME
from flask_server.model_config import DEFAULT_ROUTE
from scripts.processes import free_port
from serving_contract.export import DEFAULT_MODEL_NAME, INPUT_PIXELS_BYTES, OUTPUT_PROBABILITIES, SERVING_UINT8

PATHS = ("direct REST", "direct gRPC", "gateway (REST hop)", "gateway (gRPC hop)")
PAIRS = (("direct REST", "direct gRPC"), ("gateway (REST hop)", "gateway (gRPC hop)"))


def grpc_direct_send(channel: grpc.Channel, model_name: str, images: Sequence[bytes], size: tuple[int, int]) -> Send:
    """Decode and resize on the client, then a gRPC Predict on ``serving_uint8`` with the raw pixels."""
    predict = channel.unary_unary(messages.PREDICT_METHOD)
    spec = messages.model_spec(model_name, signature=SERVING_UINT8)

    def send(_session: requests.Session, i: int) -> None:
        pixels = preprocess(images[i % len(images)], size)
        request = messages.predict_request(spec, {INPUT_PIXELS_BYTES: [pixels.tobytes()]})
        outputs, _ = messages.read_predict_response(predict(request, timeout=TIMEOUT[1]))
        scores = outputs[OUTPUT_PROBABILITIES]
        if scores.ndim != 2 or not np.isclose(scores.sum(), 1.0, atol=1e-3):
            raise RuntimeError(f"bad probabilities: shape {scores.shape}, sum {scores.sum()}")

    return send


def hop_bytes(rest_url: str, channel: grpc.Channel, model_name: str, image: bytes,
              size: tuple[int, int]) -> dict[str, int]:
    """Request + reply bytes of one predict on each protocol (the bodies, without HTTP/2 framing)."""
    pixels = preprocess(image, size)
    body = orjson.dumps({"signature_name": SERVING_UINT8,
                         "instances": [{INPUT_PIXELS_BYTES: {"b64": pybase64.b64encode(pixels.tobytes()).decode()}}]})
    reply = requests.post(f"{rest_url}/v1/models/{model_name}:predict", data=body, headers=JSON_HEADERS,
                          timeout=TIMEOUT)
    reply.raise_for_status()
    check_probabilities(orjson.loads(reply.content))
    request = messages.predict_request(messages.model_spec(model_name, signature=SERVING_UINT8),
                                       {INPUT_PIXELS_BYTES: [pixels.tobytes()]})
    answer = channel.unary_unary(messages.PREDICT_METHOD)(request, timeout=TIMEOUT[1])
    return {"REST": len(body) + len(reply.content), "gRPC": len(request) + len(answer)}


def measure(sends: dict[str, Send], one_client: int, sixteen: int, time_limit: float) -> dict[str, dict]:
    """1-client latency (interleaved) and 16-client throughput (A B B A per pair) for every path."""
    latency = run_round_robin(sends, {key: one_client for key in sends}, time_limit, warmup=2)
    loads: dict[str, list[LoadResult]] = {key: [] for key in sends}
    for first, second in PAIRS:
        for key in (first, second, second, first):
            loads[key].append(run_load(sends[key], 16, sixteen // 2, time_limit, warmup=1))
    results = {}
    for key in sends:
        combined = LoadResult.combine(loads[key])
        results[key] = {"p50_ms": latency[key].p(50), "p99_ms": latency[key].p(99), "img_s": combined.throughput,
                        "p99_16_ms": combined.p(99), "errors": latency[key].errors + combined.errors,
                        "samples": (latency[key].error_samples + combined.error_samples)[:2]}
    return results


def render(model: str, results: dict[str, dict], sizes: dict[str, int], gateways: dict[str, dict],
           seconds: float) -> str:
    """The figures as two markdown tables: per path, then gRPC / REST ratios."""
    lines = [f"# bench.grpc_vs_rest: {model}", "",
             "| path | 1 client p50 ms | 1 client p99 ms | 16 clients img/s | 16 clients p99 ms | errors |",
             "|---|---|---|---|---|---|"]
    for key in PATHS:
        r = results[key]
        lines.append(f"| {key} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['img_s']:.1f} | {r['p99_16_ms']:.0f} "
                     f"| {r['errors']} |")
    lines += ["", "| gRPC / REST | 1 client p50 | 16 clients img/s | bytes per image on the hop |", "|---|---|---|---|"]
    ratio = sizes["gRPC"] / sizes["REST"]
    for rest, grpc_key in PAIRS:
        lines.append(f"| {rest.replace(' REST', '').replace(' (REST hop)', '')} | "
                     f"{results[grpc_key]['p50_ms'] / results[rest]['p50_ms']:.2f}x | "
                     f"{results[grpc_key]['img_s'] / results[rest]['img_s']:.2f}x | "
                     f"{sizes['gRPC']:,} / {sizes['REST']:,} = {ratio:.2f}x |")
    lines += ["", "| gateway | cold start s | worker RSS after the run MB | worker peak RSS MB |", "|---|---|---|---|"]
    for key, info in gateways.items():
        lines.append(f"| {key} | {info['cold_start_s']:.2f} | {info['rss_mb']:.0f} | {info['peak_mb']:.0f} |")
    errors = [f"  {key}: {sample}" for key in PATHS for sample in results[key]["samples"]]
    if errors:
        lines += ["", "errors:", *errors]
    lines += ["", f"(total {seconds:.0f} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model instead of InceptionV3")
    parser.add_argument("--model-base-path", type=Path, help="serve this export instead of exporting one")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per path at 1 client (%(default)s)")
    parser.add_argument("--requests-16", type=int, default=96,
                        help="timed requests per path at 16 clients, over both halves (%(default)s)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="bound of each run in seconds (%(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    model_name = DEFAULT_MODEL_NAME
    images = [p.read_bytes() for p in image_paths()]
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(tmp)
        base_path = args.model_base_path.resolve() if args.model_base_path else log_dir / model_name
        if not args.model_base_path:
            print(f"exporting {'the tiny model' if args.tiny else 'InceptionV3 (weights=None)'} ...", file=sys.stderr)
            export_in_subprocess("tiny" if args.tiny else "inception", base_path)
        version_dir = latest_version(base_path)
        size = input_size(version_dir)
        models_config = gateway_models_config(version_dir, log_dir, DEFAULT_ROUTE, model_name)
        grpc_port = free_port()
        grpc_url = f"{GRPC_URL_SCHEME}{HOST}:{grpc_port}"
        print("starting the model server and two gateways ...", file=sys.stderr, flush=True)
        ms = stack.enter_context(model_server("model server", model_name, base_path, log_dir,
                                              extra_args=[f"--port={grpc_port}"]))
        gw_rest = stack.enter_context(gateway("gateway rest", ms.url, log_dir, models_config=models_config))
        gw_grpc = stack.enter_context(gateway("gateway grpc", grpc_url, log_dir, models_config=models_config))
        channel = stack.enter_context(grpc.insecure_channel(f"{HOST}:{grpc_port}"))
        sends = {"direct REST": model_server_send(ms.url, model_name, images, size),
                 "direct gRPC": grpc_direct_send(channel, model_name, images, size),
                 "gateway (REST hop)": gateway_send(gw_rest.url, DEFAULT_ROUTE, images),
                 "gateway (gRPC hop)": gateway_send(gw_grpc.url, DEFAULT_ROUTE, images)}
        sizes = {key: int(statistics.median(hop_bytes(ms.url, channel, model_name, image, size)[key]
                                            for image in images)) for key in ("REST", "gRPC")}
        print("measuring ...", file=sys.stderr, flush=True)
        results = measure(sends, args.requests, args.requests_16, args.time_limit)
        gateways = {}
        for key, server in (("REST hop", gw_rest), ("gRPC hop", gw_grpc)):
            workers = server.worker_rss_mb()
            gateways[key] = {"cold_start_s": server.cold_start_s, "rss_mb": max(now for now, _ in workers),
                             "peak_mb": max(peak for _, peak in workers)}
    model = f"{'tiny model' if args.tiny else 'InceptionV3'} ({size[0]}x{size[1]}), images: " \
            f"{', '.join(p.name for p in image_paths())}"
    print(render(model, results, sizes, gateways, time.monotonic() - started))
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
