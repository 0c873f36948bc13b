"""How the model server runs a SavedModel: TF2 function vs TF1 Session, oneDNN on vs off, side by side.

The model server runs every signature through a ``tf.compat.v1.Session`` callable (as TF Serving
does), with TensorFlow's default oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS``; TF Serving's standard
build has TensorFlow's own kernels). This measures both choices against the benchmark's floor,
``tf.saved_model.load``'s function in a bare process with TensorFlow's defaults:

* four bare processes (``bench.bare_model``): function or Session, oneDNN on or off, batch-1
  ``serving_default`` calls timed inside the process;
* two model servers (``serving_uint8`` over REST, the client decoding and resizing the image as in
  ``make bench``'s ``model server`` row): oneDNN on (the default) and off;
* with ``--baseline DIR``, a third: the model server of another checkout of this project (e.g. one
  from before the Session, ``git worktree add /tmp/before <commit>``), to compare served/floor ratios
  before and after a change in one run.

All rows take turns (``bench.load.run_round_robin``: one untimed call, then a burst of timed ones),
so they share the same moments of machine load. The table gives p50/p99 and each p50 over the floor.

Typical usage::

    python -m bench.execution                    # InceptionV3 (untrained weights: same speed), ~3 min
    python -m bench.execution --requests 40 --tiny   # smoke run
    python -m bench.execution --baseline /tmp/before # also the model server of that checkout
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from bench.images import image_paths
from bench.load import run_round_robin
from bench.models import export_in_subprocess, input_size, latest_version
from bench.paths import model_server_send
from bench.servers import bare_process, bare_send, model_server
from bench.stats import percentile
from model_server.servable import ONEDNN_ENV
from scripts.processes import REPO_ROOT
from serving_contract.export import DEFAULT_MODEL_NAME

FLOOR = "bare: function, oneDNN on (TF defaults)"
BARE_ROWS = {  # row -> (bench.bare_model --executor, TF_ENABLE_ONEDNN_OPTS)
    FLOOR: ("function", "1"),
    "bare: Session, oneDNN on": ("session", "1"),
    "bare: function, oneDNN off": ("function", "0"),
    "bare: Session, oneDNN off": ("session", "0"),
}
SERVER_ROWS = {  # row -> TF_ENABLE_ONEDNN_OPTS
    "model server (Session, oneDNN on: default), serving_uint8": "1",
    "model server (Session, oneDNN off), serving_uint8": "0",
}


def render(results: dict, floor_p50: float) -> str:
    """The side-by-side table: p50, p99, errors and p50 over the floor's."""
    lines = ["| path | calls | p50 ms | p99 ms | errors | p50 / floor p50 |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        p50 = 1000 * percentile(result.latencies, 50) if result.latencies else float("nan")
        p99 = 1000 * percentile(result.latencies, 99) if result.latencies else float("nan")
        lines.append(f"| {name} | {len(result.latencies)} | {p50:.1f} | {p99:.1f} | {result.errors} | "
                     f"{p50 / floor_p50:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path, help="an exported model (default: export InceptionV3)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of InceptionV3 (smoke run)")
    parser.add_argument("--requests", type=int, default=120, help="timed calls per row (default %(default)s)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop measuring after this many seconds")
    parser.add_argument("--baseline", type=Path, help="also run the model server of this other checkout")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-execution-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        base_path = args.model_base_path
        if base_path is None:
            print("exporting the model ...", file=sys.stderr)
            base_path = work / DEFAULT_MODEL_NAME
            export_in_subprocess("tiny" if args.tiny else "inception", base_path)
        version_dir = latest_version(base_path)
        size = input_size(version_dir)
        images = [path.read_bytes() for path in image_paths()]
        sends = {}
        for name, (executor, onednn) in BARE_ROWS.items():
            print(f"starting {name} ...", file=sys.stderr)
            bare = stack.enter_context(bare_process(version_dir, extra_args=("--executor", executor),
                                                    env={ONEDNN_ENV: onednn}))
            sends[name] = bare_send(bare)
        servers = [(name, {ONEDNN_ENV: onednn}, REPO_ROOT) for name, onednn in SERVER_ROWS.items()]
        if args.baseline:
            servers.append(("model server of the --baseline checkout (TF defaults), serving_uint8", {}, args.baseline))
        for name, env, checkout in servers:
            print(f"starting {name} ...", file=sys.stderr)
            server = stack.enter_context(model_server(name, DEFAULT_MODEL_NAME, base_path.resolve(), work,
                                                      extra_env=env, cwd=checkout.resolve()))
            sends[name] = model_server_send(server.url, DEFAULT_MODEL_NAME, images, size)
        print("measuring ...", file=sys.stderr)
        results = run_round_robin(sends, dict.fromkeys(sends, args.requests), args.time_limit, warmup=3)
    floor_p50 = 1000 * percentile(results[FLOOR].latencies, 50)
    print(f"# bench.execution: {version_dir.name} of {base_path.name} ({size[0]}x{size[1]}), "
          f"{args.requests} batch-1 calls per row, interleaved\n")
    print(render(results, floor_p50))
    return 1 if any(result.errors for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
