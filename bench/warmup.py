"""First request after a hot swap, with and without the export's warm-up requests.

One model server (TF Serving's flags: ``--file_system_poll_wait_seconds=1``, warm-up on) watches a
base path. Each round copies the exported version in as the next version twice: once as exported
(with ``assets.extra/tf_serving_warmup_requests``, replayed before the version is AVAILABLE) and
once with that file removed. As soon as the new version is AVAILABLE, the first ``serving_uint8``
request to it is timed, then a few more (the steady state); the request body (one photo, decoded and
resized) is encoded beforehand, so the times are the server's part plus the local HTTP round trip.
Rounds alternate the order, so both kinds share the machine's moments. The table gives medians over
rounds and the ratios.

Typical usage::

    python -m bench.warmup                 # InceptionV3 (untrained weights: same speed), ~3 min
    python -m bench.warmup --tiny --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.images import image_paths
from bench.models import export_in_subprocess, input_size
from bench.paths import post_predict, uint8_body
from bench.servers import model_server
from serving_contract.export import DEFAULT_MODEL_NAME, WARMUP_REQUESTS_PATH

WITH, WITHOUT = "with warm-up file", "without warm-up file"
STEADY_REQUESTS = 4
SWAP_TIMEOUT_S = 300.0


def add_version(base_path: Path, source: Path, version: int, keep_warmup: bool) -> None:
    """Copy ``source`` in as ``version`` (staged under a hidden name, then renamed, as the exporter does)."""
    staging = base_path / f".bench-{version}"
    shutil.copytree(source, staging)
    if not keep_warmup:
        (staging / WARMUP_REQUESTS_PATH).unlink()
    staging.rename(base_path / str(version))


def wait_available(url: str, version: int) -> float:
    """Block until ``version`` is AVAILABLE; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < SWAP_TIMEOUT_S:
        response = requests.get(f"{url}/v1/models/{DEFAULT_MODEL_NAME}/versions/{version}", timeout=10)
        if response.ok and response.json()["model_version_status"][0]["state"] == "AVAILABLE":
            return time.monotonic() - started
        time.sleep(0.02)
    raise TimeoutError(f"version {version} not AVAILABLE after {SWAP_TIMEOUT_S:.0f} s")


def timed(session: requests.Session, predict_url: str, body: bytes) -> float:
    """Seconds for one predict call (the body is encoded beforehand: this times the server's part)."""
    started = time.perf_counter()
    post_predict(session, predict_url, body)
    return time.perf_counter() - started


def render(figures: dict[str, dict[str, list[float]]]) -> str:
    """Medians per kind, and the ratio of each to the steady state and without/with."""
    rows = ["| version copied in | rounds | load to AVAILABLE s | first request ms | steady p50 ms | "
            "first / steady |", "|---|---|---|---|---|---|"]
    medians = {}
    for kind, values in figures.items():
        first, steady = statistics.median(values["first"]) * 1000, statistics.median(values["steady"]) * 1000
        medians[kind] = first
        rows.append(f"| {kind} | {len(values['first'])} | {statistics.median(values['swap']):.1f} | {first:.0f} | "
                    f"{steady:.0f} | {first / steady:.2f}x |")
    rows.append(f"\nfirst request without / with warm-up: {medians[WITHOUT] / medians[WITH]:.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of InceptionV3 (smoke run)")
    parser.add_argument("--rounds", type=int, default=4, help="swaps of each kind (default %(default)s)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        work = Path(tmp)
        print("exporting the model ...", file=sys.stderr)
        source = export_in_subprocess("tiny" if args.tiny else "inception", work / "export")
        base_path = work / DEFAULT_MODEL_NAME
        base_path.mkdir()
        add_version(base_path, source, 1, keep_warmup=True)
        body = uint8_body(image_paths()[0].read_bytes(), input_size(source))
        figures = {kind: {"first": [], "steady": [], "swap": []} for kind in (WITH, WITHOUT)}
        with model_server("model server", DEFAULT_MODEL_NAME, base_path, work,
                          extra_args=("--file_system_poll_wait_seconds=1",)) as server, requests.Session() as session:
            predict_url = f"{server.url}/v1/models/{DEFAULT_MODEL_NAME}:predict"
            version = 1
            for round_number in range(args.rounds):
                kinds = (WITH, WITHOUT) if round_number % 2 == 0 else (WITHOUT, WITH)
                for kind in kinds:
                    version += 1
                    print(f"round {round_number + 1}: version {version}, {kind} ...", file=sys.stderr)
                    add_version(base_path, source, version, keep_warmup=kind == WITH)
                    figures[kind]["swap"].append(wait_available(server.url, version))
                    figures[kind]["first"].append(timed(session, predict_url, body))
                    figures[kind]["steady"].append(
                        statistics.median(timed(session, predict_url, body) for _ in range(STEADY_REQUESTS)))
    print(f"# bench.warmup: {source.name} ({'tiny' if args.tiny else 'InceptionV3'}), {args.rounds} hot swaps of "
          f"each kind, serving_uint8 batch 1\n")
    print(render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
