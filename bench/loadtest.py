"""Bounded load test: 2,000 requests from 16 concurrent clients through the production gateway.

Starts its own model server and gunicorn gateway (flask_server/gunicorn.conf.py) on 127.0.0.1 and
free ports, with a tiny exported model by default (so the gateway, not the model, is under load) or
InceptionV3 with ``--inception`` (fewer requests). Every response is checked. Prints p50/p99,
throughput and errors; exits 1 if any request failed or the time bound cut the run short.

Typical usage::

    python -m bench.loadtest                 # make loadtest
    python -m bench.loadtest --inception     # 200 requests against the real network
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.images import image_paths
from bench.load import run_load
from bench.models import export_in_subprocess, gateway_models_config
from bench.paths import gateway_send
from bench.servers import gateway, model_server
from flask_server.model_config import DEFAULT_ROUTE
from serving_contract.export import DEFAULT_MODEL_NAME

DEFAULT_REQUESTS = 2000
INCEPTION_REQUESTS = 200  # ~20 s of InceptionV3 at ~10 img/s on 2 cores
DEFAULT_CLIENTS = 16
TIME_LIMIT = 300.0  # seconds; the run is cut (and fails) if it takes longer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inception", action="store_true", help="InceptionV3 instead of the tiny model")
    parser.add_argument("--requests", type=int,
                        help=f"default {DEFAULT_REQUESTS} ({INCEPTION_REQUESTS} with --inception)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT)
    parser.add_argument("--route", default=DEFAULT_ROUTE)
    args = parser.parse_args(argv)
    total = args.requests or (INCEPTION_REQUESTS if args.inception else DEFAULT_REQUESTS)
    images = [p.read_bytes() for p in image_paths()]

    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        base_path = Path(tmp) / DEFAULT_MODEL_NAME
        kind = "inception" if args.inception else "tiny"
        print(f"exporting the {kind} model, starting the model server and gunicorn ...", flush=True)
        version_dir = export_in_subprocess(kind, base_path)
        models_config = gateway_models_config(version_dir, Path(tmp), args.route, DEFAULT_MODEL_NAME)
        with model_server("model server", DEFAULT_MODEL_NAME, base_path, Path(tmp)) as ms, \
                gateway("gateway", ms.url, Path(tmp), models_config=models_config) as gw:
            print(f"model server ready in {ms.cold_start_s:.1f} s, gateway in {gw.cold_start_s:.1f} s; "
                  f"{total} requests, {args.clients} clients, at most {args.time_limit:.0f} s", flush=True)
            result = run_load(gateway_send(gw.url, args.route, images), args.clients, total, args.time_limit,
                              warmup=1)
            workers = gw.worker_rss_mb()
    print(f"requests ok: {result.ok}/{total}   errors: {result.errors}   wall: {result.wall_s:.1f} s")
    print(f"p50: {result.p(50):.1f} ms   p99: {result.p(99):.1f} ms   throughput: {result.throughput:.1f} req/s")
    print("gateway workers RSS now/peak MB: " + ", ".join(f"{now:.0f}/{peak:.0f}" for now, peak in workers))
    for sample in result.error_samples[:5]:
        print(f"  error: {sample}")
    if result.errors or result.ok < total:
        print("FAIL: " + (f"{result.errors} errors" if result.errors else f"only {result.ok} of {total} in time"))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
