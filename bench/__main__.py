"""Benchmark: bare model vs model server vs gateway vs the tutorial's path, side by side, one table.

Starts everything itself on 127.0.0.1 and free ports: exports InceptionV3 (untrained weights: same
speed) to a temp dir, loads it in a bare process (the floor), then starts the model server
(with and without ``--enable_batching``) and the gunicorn gateway (flask_server/gunicorn.conf.py)
with the commands ``make run`` uses, and runs every path at 1, 4 and 16 concurrent clients with the
same images (retina.jpg, astronaut.png, alternating). Every response is checked.

Typical usage::

    python -m bench                      # make bench: full run, ~4 minutes on 2 cores
    python -m bench --quick --tiny       # smoke run with a tiny model (~30 s)
    python -m bench --model-base-path my_image_classifier --json bench/results.json
    python -m bench --sweep 1x4,2x4,4x4,2x8 --only-sweep   # gateway workers x threads
    python -m bench --model-server-args="--tensorflow_intra_op_parallelism=1"  # model server flags
    python -m bench --no-v2              # without the model server's v2 (KServe) rows
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import report
from bench.images import image_paths
from bench.load import LoadResult, run_load, run_round_robin
from bench.models import export_in_subprocess, export_info, gateway_models_config, input_size, latest_version
from bench.paths import V2_BINARY, V2_JSON, gateway_send, model_server_send, tutorial_send, v2_send
from bench.procinfo import cpu_seconds, peak_rss_mb, rss_mb, tree
from bench.servers import BareProcess, bare_process, bare_send, gateway, model_server
from flask_server.model_config import DEFAULT_ROUTE
from scripts.processes import ChildDied
from serving_contract.export import DEFAULT_MODEL_NAME


@dataclasses.dataclass(frozen=True)
class Plan:
    """Request counts per row for each number of concurrent clients, and bounds."""

    requests: dict[int, int]  # clients -> requests for the server rows
    tutorial_requests: dict[int, int]  # the tutorial path is ~5x slower: fewer requests, same bound
    time_limit: float  # seconds per measurement, whatever the count
    batch_sizes: tuple[int, ...]  # the bare model's throughput is measured at each
    warmup: int  # untimed requests per client before the 1-client measurement


FULL = Plan({1: 24, 4: 32, 16: 96}, {1: 8, 4: 12, 16: 24}, 40.0, (1, 4, 8, 16), 2)
QUICK = Plan({1: 5, 4: 8, 16: 16}, {1: 3, 4: 4, 16: 16}, 15.0, (1, 4), 1)
SWEEP_REQUESTS = 96
# Paths that send float JSON (~5x slower): fewer requests, same time bound.
SLOW_PATHS = ("tutorial", "v2_json")


def measure_bare_throughput(bare: BareProcess, sizes: list[int], images: int, row: dict) -> None:
    """Images/s of the bare model calling at each batch size; keeps the best in ``row``, and the CPU
    per image of the run that set it."""
    by_batch = row.setdefault("throughput_by_batch", {})
    cpu_by_batch = row.setdefault("cpu_ms_per_img_by_batch", {})
    for size in sizes:
        answer = bare.ask_line({"throughput": [size, images]})
        if answer["img_per_s"] > by_batch.get(str(size), 0.0):
            by_batch[str(size)], cpu_by_batch[str(size)] = answer["img_per_s"], answer["cpu_ms_per_img"]
    best = max(by_batch, key=by_batch.get)
    row["best_throughput"], row["best_cpu_ms_per_img"] = by_batch[best], cpu_by_batch[best]


class CpuMeter:
    """CPU seconds used during load runs by each process a path involves: its servers' process trees
    (gunicorn's workers may be recycled, so the tree is listed at each reading) and this process,
    whose client threads send the requests."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = servers  # role ("model server", "gateway") -> root pid
        self.used: dict[str, float] = {role: 0.0 for role in [*servers, "client"]}
        self.images = 0
        self.wall_s = 0.0

    def _reading(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {**{role: cpu_seconds(tree(pid)) for role, pid in self.servers.items()},
                "client": own.ru_utime + own.ru_stime}

    def run(self, load: Callable[[], LoadResult]) -> LoadResult:
        """Run ``load()`` and add the CPU it cost each process to the totals."""
        before = self._reading()
        result = load()
        after = self._reading()
        for role in self.used:
            self.used[role] += after[role] - before[role]
        self.images += result.ok
        self.wall_s += result.wall_s
        return result

    def figures(self) -> dict:
        """CPU ms per successful image by process, their total, and how many cores were busy on average."""
        if not self.images or not self.wall_s:
            return {}
        per_image = {role: 1000 * used / self.images for role, used in self.used.items()}
        return {"ms_per_img": per_image, "total_ms_per_img": sum(per_image.values()),
                "cores_busy": sum(self.used.values()) / self.wall_s}


def measure_rows(senders: dict, bare: BareProcess | None, plan: Plan, rows: dict,
                 path_servers: dict[str, dict[str, int]] | None = None) -> None:
    """Every path at 1, 4 and 16 clients, ordered so that the rows share the machine's noise.

    1 client: round robin in bursts of a few requests (the bare model included). 4 and 16 clients: each
    path's requests are split in two halves run in A-B-C-D then D-C-B-A order, so a drift in
    background load hits every path about equally; the bare model's batch-N throughput is measured
    at both ends of that sequence. At 16 clients the CPU each process spends per image is measured
    too (``path_servers``: path -> role -> root pid of the servers it goes through).
    """
    sends = ({"model": bare_send(bare)} if bare else {}) | senders
    if not sends:  # --only-sweep
        return
    counts = {key: plan.tutorial_requests[1] if key in SLOW_PATHS else plan.requests[1] for key in sends}
    for key, result in run_round_robin(sends, counts, plan.time_limit * len(sends), plan.warmup).items():
        _record(rows, key, result)
    for clients in report.LEVELS[1:]:
        parts: dict[str, list] = {key: [] for key in senders}
        meters = {key: CpuMeter((path_servers or {}).get(key, {})) for key in senders}
        order = list(senders)
        for keys in (order, order[::-1]):
            if bare and keys is order:
                measure_bare_throughput(bare, [clients], plan.requests[clients] // 2, rows["model"])
            for key in keys:
                total = (plan.tutorial_requests if key in SLOW_PATHS else plan.requests)[clients]
                parts[key].append(meters[key].run(
                    lambda: run_load(senders[key], clients, max(1, total // 2), plan.time_limit / 2)))
        if clients == report.LEVELS[-1]:
            for key, meter in meters.items():
                rows[key]["cpu"] = meter.figures()
        if bare:
            measure_bare_throughput(bare, [clients], plan.requests[clients] // 2, rows["model"])
            rows["model"].setdefault("levels", {})[str(clients)] = {
                "throughput": rows["model"]["throughput_by_batch"][str(clients)], "errors": 0}
        for key in senders:
            _record(rows, key, LoadResult.combine(parts[key]))
    if bare:  # the other batch sizes, for the model's best throughput
        others = [size for size in plan.batch_sizes if str(size) not in rows["model"]["throughput_by_batch"]]
        measure_bare_throughput(bare, others, plan.requests[report.LEVELS[-1]], rows["model"])


def _record(rows: dict, key: str, result: LoadResult) -> None:
    level = result.as_dict()
    if key == "model":  # the bare model has no HTTP and no throughput at 1 client
        level = {"p50_ms": level["p50_ms"], "p99_ms": level["p99_ms"], "errors": level["errors"]}
    rows.setdefault(key, {}).setdefault("levels", {})[str(result.clients)] = level
    print(f"  {key:<22} {result.clients:>2} clients: {result.ok:>3} ok, {result.errors} errors, "
          f"p50 {result.p(50):7.1f} ms, {result.throughput:5.1f} img/s", file=sys.stderr, flush=True)


def process_entry(name: str, pid: int, cold_start_s: float, rss_ready: float) -> dict:
    """Memory of one process tree: when ready, now (after the load) and its peak."""
    pids = tree(pid)
    return {"name": name, "cold_start_s": cold_start_s, "rss_ready_mb": rss_ready,
            "rss_after_mb": sum(rss_mb(p) for p in pids), "peak_mb": sum(peak_rss_mb(p) for p in pids)}


def worker_entry(server, rss_ready: list[tuple[float, float]]) -> dict:
    workers = server.worker_rss_mb()
    return {"name": "gateway worker (max)", "cold_start_s": server.cold_start_s,
            "rss_ready_mb": max((now for now, _ in rss_ready), default=None),
            "rss_after_mb": max((now for now, _ in workers), default=None),
            "peak_mb": max((peak for _, peak in workers), default=None), "workers": len(workers)}


def run_sweep(configs: list[str], ms_url: str, route: str, images: list[bytes], plan: Plan, log_dir: Path,
              models_config: Path | None) -> list[dict]:
    """Gateway throughput at 16 clients for each ``WORKERSxTHREADS`` config, same model server."""
    results = []
    for config in configs:
        workers, threads = (int(n) for n in config.lower().split("x"))
        try:
            with gateway(f"gateway {config}", ms_url, log_dir, workers, threads, models_config) as gw:
                send = gateway_send(gw.url, route, images)
                run_load(send, 4, 8, plan.time_limit)  # warm every worker's connections
                result = run_load(send, 16, SWEEP_REQUESTS if plan is FULL else 16, plan.time_limit)
                workers_rss = gw.worker_rss_mb()
                results.append({"config": config, **result.as_dict(),
                                "worker_rss_mb": max((now for now, _ in workers_rss), default=None),
                                "worker_peak_mb": max((peak for _, peak in workers_rss), default=None)})
        except Exception as exc:  # noqa: BLE001 - a failed config is reported, the others still run
            results.append({"config": config, "error": repr(exc)[:300]})
        print(f"  sweep {config}: {results[-1].get('throughput', 0):.1f} img/s", file=sys.stderr, flush=True)
    return results


def path_servers(servers: dict) -> dict[str, dict[str, int]]:
    """For each benchmarked path, the root pid of each server it goes through, by role."""
    pids = {key: server.child.pid for key, server in servers.items()}
    paths: dict[str, dict[str, int]] = {}
    for suffix in ("", "_batching"):
        model_server_pid, gateway_pid = pids.get("model_server" + suffix), pids.get("gateway" + suffix)
        if model_server_pid:
            paths["model_server" + suffix] = {"model server": model_server_pid}
            if gateway_pid:
                paths["gateway" + suffix] = {"model server": model_server_pid, "gateway": gateway_pid}
    if "model_server" in paths:
        for key in ("tutorial", "v2_binary", "v2_json"):
            paths[key] = paths["model_server"]
    return paths


def note_failure(rows: dict, key: str, exc: Exception) -> None:
    """A server that did not start: its rows (and its gateway's) say why, the others still run."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
    for row in (key, key.replace("model_server", "gateway")):
        rows.setdefault(row, {"error": reason})
    print(f"  {key}: {exc}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run, not a measurement")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of InceptionV3 (for tests)")
    parser.add_argument("--model-base-path", type=Path,
                        help="use this exported model directory (e.g. my_image_classifier) instead of exporting")
    parser.add_argument("--route", default=DEFAULT_ROUTE, help="gateway route to call (%(default)s)")
    parser.add_argument("--no-batching", action="store_true", help="skip the + batching rows")
    parser.add_argument("--no-v2", action="store_true", help="skip the two model server v2 (KServe) rows")
    parser.add_argument("--sweep", default="", help="also measure gateway configs, e.g. 1x4,2x4,4x4,2x8")
    parser.add_argument("--only-sweep", action="store_true", help="only the sweep (with the model server)")
    parser.add_argument("--model-server-args", default="",
                        help="more flags for every model server started (the bare process keeps TF's defaults)")
    parser.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    parser.add_argument("--keep-logs", type=Path, help="write server logs here instead of a temp dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    model_name = DEFAULT_MODEL_NAME
    images = [p.read_bytes() for p in image_paths()]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        log_dir = args.keep_logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        if args.model_base_path:
            base_path = args.model_base_path.resolve()
        else:
            base_path = Path(tmp) / model_name
            print(f"exporting {'tiny model' if args.tiny else 'InceptionV3 (weights=None)'} ...", file=sys.stderr)
            export_in_subprocess("tiny" if args.tiny else "inception", base_path)
        version_dir = latest_version(base_path)
        size = input_size(version_dir)
        models_config = gateway_models_config(version_dir, Path(tmp), args.route, model_name)
        classes = export_info(version_dir).get("classes")
        figures: dict = {"cores": os.cpu_count(), "model": f"{version_dir} ({size[0]}x{size[1]}, {classes} classes)",
                         "images": [p.name for p in image_paths()],
                         "mode": "quick" if args.quick else "full", "rows": {}, "processes": [],
                         "model_server_args": args.model_server_args}
        rows = figures["rows"]

        # A full run starts the processes one after another, so each cold start is measured alone; a
        # quick run starts them all at once (their cold starts then overlap and mean little).
        wait = not args.quick
        print("loading the model in a bare process, starting servers ...", file=sys.stderr, flush=True)
        bare = None if args.only_sweep else stack.enter_context(bare_process(version_dir, wait))
        servers: dict = {}
        specs = [("model_server", False)]
        if not (args.no_batching or args.only_sweep):
            specs.append(("model_server_batching", True))
        for key, batching in specs:
            name = key.replace("_", " ")
            ms = stack.enter_context(model_server(name, model_name, base_path, log_dir, batching, wait,
                                                  shlex.split(args.model_server_args)))
            gw_key = key.replace("model_server", "gateway")
            if wait:
                try:
                    ms.wait_ready()
                except (ChildDied, TimeoutError) as exc:
                    note_failure(rows, key, exc)
                    continue
            servers[key] = ms
            servers[gw_key] = stack.enter_context(gateway(gw_key.replace("_", " "), ms.url, log_dir,
                                                          models_config=models_config, wait=wait))
        ready_rss = {}
        if bare:
            rows["model"] = {}
            ready_rss["bare"] = rss_mb(bare.wait_ready().pid)
        for key, server in list(servers.items()):
            if key.startswith("gateway") and key.replace("gateway", "model_server") not in servers:
                del servers[key]  # its model server did not start: it would never be ready
                continue
            try:
                server.wait_ready()
            except (ChildDied, TimeoutError) as exc:
                note_failure(rows, key, exc)
                del servers[key]
                continue
            ready_rss[key] = server.worker_rss_mb() if key.startswith("gateway") else server.rss_mb()

        senders = {}
        if "model_server" in servers and not args.only_sweep:
            ms_url = servers["model_server"].url
            senders["model_server"] = model_server_send(ms_url, model_name, images, size, classes)
            senders["tutorial"] = tutorial_send(ms_url, model_name, images, size, classes)
            if not args.no_v2:
                for encoding in (V2_BINARY, V2_JSON):
                    senders[f"v2_{encoding}"] = v2_send(ms_url, model_name, images, size, classes, encoding,
                                                        export_info(version_dir).get("preprocessing", "tf"))
        if "gateway" in servers and not args.only_sweep:
            senders["gateway"] = gateway_send(servers["gateway"].url, args.route, images)
        if "model_server_batching" in servers:
            senders["model_server_batching"] = model_server_send(servers["model_server_batching"].url, model_name,
                                                                 images, size, classes)
        if "gateway_batching" in servers:
            senders["gateway_batching"] = gateway_send(servers["gateway_batching"].url, args.route, images)
        for key in senders:
            rows.setdefault(key, {})
        measure_rows(senders, bare, plan, rows, path_servers(servers))

        if bare:
            figures["processes"].append(process_entry("bare process (same SavedModel)", bare.pid, bare.cold_start_s,
                                                      ready_rss["bare"]))
        for key, label in (("model_server", "model server"), ("model_server_batching", "model server + batching")):
            if key in servers:
                figures["processes"].append(process_entry(label, servers[key].child.pid, servers[key].cold_start_s,
                                                          ready_rss[key]))
        if "gateway" in servers:
            figures["processes"].append(worker_entry(servers["gateway"], ready_rss["gateway"]))
            master = servers["gateway"]
            figures["processes"].append({"name": "gateway master (gunicorn arbiter)",
                                         "rss_after_mb": master.rss_mb() - sum(n for n, _ in master.worker_rss_mb())})
        if args.sweep and "model_server" in servers:
            figures["sweep"] = run_sweep(args.sweep.split(","), servers["model_server"].url, args.route, images,
                                         plan, log_dir, models_config)
        for server in servers.values():  # all at once (~2 s each); the stack then only waits
            server.child.terminate()
    figures["wall_s"] = time.monotonic() - started
    print(report.render(figures))
    print(f"\n(total {figures['wall_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
