"""TensorFlow's thread pools in a bare process: latency at one caller, throughput with callers at once.

The model server's ``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``
decide how one request's ops share the cores. This measures the trade-off on the bare SavedModel,
with no HTTP: each setting gets its own ``bench.bare_model`` process (TensorFlow fixes its pools once
per process), all loaded side by side, and every measurement runs the settings one after another,
then again in reverse order, so the machine's background load hits each about equally.

For each setting it prints the batch-1 p50 of one caller, then img/s and CPU per image (all of the
process's threads) for each number of concurrent callers and batch size. A setting is ``INTRAxINTER``;
0 means TensorFlow's default (one thread per core).

Typical usage::

    python -m bench.threads                                  # InceptionV3, settings 0x0 and 1x2
    python -m bench.threads --settings 0x0,1x2,2x1 --callers 1,2,4 --batches 1,4,8
    python -m bench.threads --model-base-path my_image_classifier
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from bench.models import export_in_subprocess, latest_version
from bench.servers import BareProcess, bare_process

DEFAULT_SETTINGS = "0x0,1x2"


def parse_setting(text: str) -> tuple[int, int]:
    """``"1x2"`` -> (1, 2): intra-op and inter-op threads."""
    intra, inter = (int(part) for part in text.lower().split("x"))
    if intra < 0 or inter < 0:
        raise ValueError(f"thread counts must be >= 0: {text!r}")
    return intra, inter


def _measure_in_both_orders(bares: dict[str, BareProcess], command: dict, merge) -> dict[str, dict]:
    """``command`` to every process in order, then in reverse; ``merge(first, second)`` per setting."""
    first = {name: bare.ask_line(command) for name, bare in bares.items()}
    second = {name: bares[name].ask_line(command) for name in reversed(list(bares))}
    return {name: merge(first[name], second[name]) for name in bares}


def _pooled(first: dict, second: dict) -> dict:
    """Two throughput answers as one: images and time add up."""
    images = first["images"] + second["images"]
    seconds = first["images"] / first["img_per_s"] + second["images"] / second["img_per_s"]
    cpu = (first["cpu_ms_per_img"] * first["images"] + second["cpu_ms_per_img"] * second["images"]) / images
    return {"images": images, "img_per_s": images / seconds, "cpu_ms_per_img": cpu}


def measure(bares: dict[str, BareProcess], callers: list[int], batches: list[int], images: int,
            latency_calls: int) -> dict[str, dict]:
    """Every figure for every setting: {"p50_ms", "runs": {(callers, batch): throughput answer}}."""
    results: dict[str, dict] = {name: {"runs": {}} for name in bares}
    p50s = _measure_in_both_orders(bares, {"latency": max(1, latency_calls // 2)},
                                   lambda a, b: (a["p50_ms"] + b["p50_ms"]) / 2)
    for name, p50 in p50s.items():
        results[name]["p50_ms"] = p50
    for count in callers:
        for batch in batches:
            pooled = _measure_in_both_orders(bares, {"concurrent": [count, batch, max(1, images // 2)]}, _pooled)
            for name, answer in pooled.items():
                results[name]["runs"][(count, batch)] = answer
    return results


def render(results: dict[str, dict], callers: list[int], batches: list[int]) -> str:
    """One markdown table: a row per setting, a column per (callers, batch)."""
    columns = [(count, batch) for count in callers for batch in batches]
    header = ["intra-op x inter-op", "1 caller batch-1 p50 ms"] + [
        f"{count} caller{'s' if count > 1 else ''}, batch {batch}: img/s, core-ms/img" for count, batch in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        cells = [name, f"{result['p50_ms']:.1f}"]
        for column in columns:
            run = result["runs"][column]
            cells.append(f"{run['img_per_s']:.1f}, {run['cpu_ms_per_img']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(0 = TensorFlow's default: one thread per core)"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="INTRAxINTER,... (%(default)s)")
    parser.add_argument("--callers", default="1,2", help="concurrent callers to try (%(default)s)")
    parser.add_argument("--batches", default="1,4", help="batch sizes to try (%(default)s)")
    parser.add_argument("--images", type=int, default=64, help="images per measurement, both halves (%(default)s)")
    parser.add_argument("--latency-calls", type=int, default=20, help="batch-1 calls for the p50 (%(default)s)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of InceptionV3 (for tests)")
    parser.add_argument("--model-base-path", type=Path, help="use this exported model directory instead of exporting")
    args = parser.parse_args(argv)
    settings = {f"{intra}x{inter}": (intra, inter) for intra, inter in map(parse_setting, args.settings.split(","))}
    callers, batches = _ints(args.callers), _ints(args.batches)
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp, contextlib.ExitStack() as stack:
        base_path = args.model_base_path
        if base_path is None:
            base_path = Path(tmp) / "model"
            print(f"exporting {'tiny model' if args.tiny else 'InceptionV3 (weights=None)'} ...", file=sys.stderr)
            export_in_subprocess("tiny" if args.tiny else "inception", base_path)
        version_dir = latest_version(base_path.resolve())
        bares = {name: stack.enter_context(bare_process(version_dir, wait=False,
                                                        extra_args=(f"--intra-op={intra}", f"--inter-op={inter}")))
                 for name, (intra, inter) in settings.items()}
        for name, bare in bares.items():
            # TensorFlow silently keeps its defaults if a setting comes too late: check what it uses.
            if bare.wait_ready().ready_info.get("threads") != list(settings[name]):
                raise RuntimeError(f"setting {name}: TensorFlow reports {bare.ready_info.get('threads')}")
        print(f"loaded {version_dir} in {len(bares)} processes; measuring ...", file=sys.stderr, flush=True)
        results = measure(bares, callers, batches, args.images, args.latency_calls)
    print(render(results, callers, batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
