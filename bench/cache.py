"""The response cache (GATEWAY_CACHE): a hit's latency beside a miss, through the real gateway.

Exports InceptionV3 (untrained weights: same speed; ``--tiny``: the tiny classifier) into a temp
directory, starts one model server and three gunicorn gateways in front of it with the commands
``make run`` uses (one worker each, so a memory cache sees every request): without a cache, with
``memory://``, and with a throwaway ``redis-server`` (that row is skipped when none is installed).
One client then sends, round after round, one request to every row in turn, so all rows share the
same moments of machine load:

* ``no cache``: the benchmark's photo (``retina.jpg``, 2 MP JPEG) each time;
* ``... miss``: a new variant of it each time: the same pixels with a unique JPEG comment (or PNG
  text chunk), so the decode costs the same but the bytes, and so the key, are new;
* ``... hit``: the same file each time, stored by an untimed first request.

Every response must be 200 with a top-k answer and the expected ``X-Cache`` header. The table gives
median and p90 latency, each row's p50 over the ``no cache`` p50, and each cache's miss p50 over
its hit p50.

Typical usage::

    python -m bench.cache                 # InceptionV3, 40 rounds (~1-2 min on 2 cores)
    python -m bench.cache --tiny --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import orjson
import requests

from bench.images import image_paths
from bench.models import export_in_subprocess, gateway_models_config, latest_version
from bench.paths import JSON_HEADERS, TIMEOUT, BadResponse, check_top_k
from bench.servers import gateway, model_server
from bench.stats import percentile
from flask_server.model_config import DEFAULT_ROUTE
from flask_server.response_cache import CACHE_HEADER, HIT, MISS
from scripts.redis_process import RedisNotInstalled, start_redis_server
from serving_contract.export import DEFAULT_MODEL_NAME

NO_CACHE = "no cache"
MEMORY_URL = "memory://?size=4096"
JPEG_SOI = b"\xff\xd8"
JPEG_COMMENT = b"\xff\xfe"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND"


def unique_variant(image: bytes, n: int) -> bytes:
    """``image`` with a comment naming ``n``: the same pixels and decode work, different bytes.

    JPEG: a COM segment right after the start-of-image marker. PNG: a tEXt chunk before IEND.
    """
    text = f"bench variant {n}".encode()
    if image.startswith(JPEG_SOI):
        return JPEG_SOI + JPEG_COMMENT + struct.pack(">H", len(text) + 2) + text + image[2:]
    if image.startswith(PNG_SIGNATURE):
        end = image.rindex(PNG_END) - 4  # the IEND chunk starts with its 4-byte length
        data = b"tEXt" + b"Comment\x00" + text
        chunk = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
        return image[:end] + chunk + image[end:]
    raise ValueError("unique_variant takes a JPEG or a PNG")


def predict_once(session: requests.Session, url: str, route: str, image: bytes, expect: str | None) -> float:
    """POST one image as ``{"b64": ...}``, check the answer and ``X-Cache``; return seconds taken."""
    started = time.perf_counter()
    response = session.post(f"{url}/v1/models/{route}/predict", data=orjson.dumps(
        {"b64": base64.b64encode(image).decode()}), headers=JSON_HEADERS, timeout=TIMEOUT)
    if response.status_code != 200:
        raise BadResponse(f"HTTP {response.status_code}: {response.text[:200]}")
    check_top_k(orjson.loads(response.content))
    elapsed = time.perf_counter() - started
    if response.headers.get(CACHE_HEADER) != expect:
        raise BadResponse(f"expected {CACHE_HEADER}: {expect}, got {response.headers.get(CACHE_HEADER)}")
    return elapsed


def measure(gateways: dict[str, str], route: str, image: bytes, rounds: int) -> dict[str, list[float]]:
    """Per row, ``rounds`` latencies (s), one request per row per round (module doc)."""
    rows: dict[str, tuple[str, str | None, Sequence[bytes]]] = {}
    for n, (name, url) in enumerate(gateways.items()):
        if name == NO_CACHE:
            rows[name] = (url, None, [image])
            continue
        rows[f"{name} miss"] = (url, MISS, [unique_variant(image, n * (rounds + 1) + i) for i in range(rounds + 1)])
        rows[f"{name} hit"] = (url, HIT, [image])
    sessions = {row: requests.Session() for row in rows}
    latencies: dict[str, list[float]] = {row: [] for row in rows}
    try:
        # Untimed: connections, first-call costs, and the entry every hit row reads afterwards.
        for row, (url, expect, images) in rows.items():
            predict_once(sessions[row], url, route, images[-1], MISS if expect == HIT else expect)
        for i in range(rounds):
            for row, (url, expect, images) in rows.items():
                latencies[row].append(predict_once(sessions[row], url, route, images[i % len(images)], expect))
    finally:
        for session in sessions.values():
            session.close()
    return latencies


def format_table(latencies: dict[str, list[float]]) -> str:
    """Markdown: p50 and p90 per row, each p50 over the no-cache p50; then miss / hit per cache."""
    p50 = {row: 1000 * percentile(values, 50) for row, values in latencies.items()}
    base = p50[NO_CACHE]
    lines = ["| path | p50 ms | p90 ms | p50 / no cache |", "|---|---|---|---|"]
    for row, values in latencies.items():
        lines.append(f"| {row} | {p50[row]:.1f} | {1000 * percentile(values, 90):.1f} | {p50[row] / base:.2f}x |")
    lines.append("")
    for row in latencies:
        if row.endswith(" hit"):
            cache = row.removesuffix(" hit")
            lines.append(f"{cache}: a hit answers in {p50[row]:.1f} ms against {p50[f'{cache} miss']:.1f} ms "
                         f"for a miss ({p50[f'{cache} miss'] / p50[row]:.1f}x faster)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny classifier instead of InceptionV3")
    parser.add_argument("--rounds", type=int, default=40, help="timed requests per row (default 40)")
    parser.add_argument("--image", type=Path, default=image_paths()[0], help="JPEG or PNG (default: the bench photo)")
    parser.add_argument("--keep-logs", type=Path, help="keep every server's log in this directory")
    args = parser.parse_args(argv)
    image = args.image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp, contextlib.ExitStack() as stack:
        log_dir = args.keep_logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        base_path = Path(tmp) / DEFAULT_MODEL_NAME
        print(f"exporting {'tiny model' if args.tiny else 'InceptionV3 (weights=None)'} ...", file=sys.stderr)
        export_in_subprocess("tiny" if args.tiny else "inception", base_path)
        version_dir = latest_version(base_path)
        models_config = gateway_models_config(version_dir, Path(tmp), DEFAULT_ROUTE, DEFAULT_MODEL_NAME)
        caches = {NO_CACHE: None, "memory": MEMORY_URL}
        try:
            caches["redis"] = stack.enter_context(start_redis_server(log_dir / "redis.log"))
        except RedisNotInstalled as exc:
            print(f"no redis row: {exc}", file=sys.stderr)
        print("starting servers ...", file=sys.stderr, flush=True)
        ms = stack.enter_context(model_server("model server", DEFAULT_MODEL_NAME, base_path, log_dir))
        gateways = {}
        for name, cache in caches.items():
            env = {"GATEWAY_CACHE": cache} if cache else {}
            server = stack.enter_context(gateway(f"gateway {name}", ms.url, log_dir, workers=1, threads=4,
                                                 models_config=models_config, extra_env=env))
            gateways[name] = server.url
        print(f"measuring {args.rounds} rounds ...", file=sys.stderr, flush=True)
        latencies = measure(gateways, DEFAULT_ROUTE, image, args.rounds)
    print(f"# response cache: {version_dir.parent.name} ({'tiny' if args.tiny else 'InceptionV3'}) | "
          f"image: {args.image.name} | {args.rounds} rounds, 1 client, gunicorn 1 worker x 4 threads\n")
    print(format_table(latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
