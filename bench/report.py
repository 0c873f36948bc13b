"""The benchmark's table, its targets (PASS/FAIL) and the batching verdict, from the figures dict."""

from __future__ import annotations

import math
import os

# (label, row key) in table order; rows missing from the figures are skipped.
ROWS = (
    ("model (in-process, batch N)", "model"),
    ("model server (serving_uint8)", "model_server"),
    ("gateway (gunicorn)", "gateway"),
    ("tutorial (float JSON)", "tutorial"),
    ("model server v2 (binary uint8)", "v2_binary"),
    ("model server v2 (JSON FP32)", "v2_json"),
    ("model server + batching", "model_server_batching"),
    ("gateway + batching", "gateway_batching"),
)
LEVELS = (1, 4, 16)
TARGET_THROUGHPUT_RATIO = 0.85  # gateway at 16 clients vs the model's best in-process throughput


def _num(value: float | None, fmt: str | None = None) -> str:
    """Format a figure; '-' when missing. Default: whole numbers, one decimal below 10 (tiny models)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return (fmt or ("{:.1f}" if abs(value) < 10 else "{:.0f}")).format(value)


def _cell(row: dict, clients: int, key: str) -> float | None:
    return row.get("levels", {}).get(str(clients), {}).get(key)


def table(figures: dict) -> str:
    """The main table: latency at 1 client, throughput and p99 at 4 and 16 clients, errors, ratio."""
    model_p50 = _cell(figures["rows"].get("model", {}), 1, "p50_ms")
    header = ("| path | 1 client p50 ms | 1 client p99 ms | 4 clients img/s | 4 clients p99 ms "
              "| 16 clients img/s | 16 clients p99 ms | errors | p50 / model p50 |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for label, key in ROWS:
        row = figures["rows"].get(key)
        if row is None:
            continue
        if row.get("error"):
            lines.append(f"| {label} | not measured: {row['error'][:120]} |")
            continue
        p50 = _cell(row, 1, "p50_ms")
        ratio = p50 / model_p50 if p50 and model_p50 else None
        lines.append("| " + " | ".join([
            label, _num(p50), _num(_cell(row, 1, "p99_ms")),
            _num(_cell(row, 4, "throughput"), "{:.1f}"), _num(_cell(row, 4, "p99_ms")),
            _num(_cell(row, 16, "throughput"), "{:.1f}"), _num(_cell(row, 16, "p99_ms")),
            str(sum(level.get("errors", 0) for level in row.get("levels", {}).values())),
            _num(ratio, "{:.2f}x")]) + " |")
    return "\n".join(lines)


def cpu_table(figures: dict) -> str:
    """CPU per image at 16 clients by process, and the throughput that CPU allows on this machine.

    Every process shares the same cores, so ``cores x 1000 / total`` is the most images per second
    the path could reach even with every core busy all the time.
    """
    cores = figures.get("cores") or os.cpu_count() or 1
    lines = [f"CPU per image at {LEVELS[-1]} clients (core-ms; {cores} cores = {cores * 1000} core-ms per second):", "",
             "| path | model server | gateway | client | total | cores busy | img/s if all cores were busy |",
             "|---|---|---|---|---|---|---|"]
    model = figures["rows"].get("model", {})
    if model.get("best_cpu_ms_per_img"):
        total = model["best_cpu_ms_per_img"]
        lines.append(f"| model (in-process, best batch) | - | - | - | {_num(total)} | - | {_num(cores * 1000 / total)} |")
    for label, key in ROWS[1:]:
        cpu = figures["rows"].get(key, {}).get("cpu") or {}
        if not cpu:
            continue
        parts, total = cpu["ms_per_img"], cpu["total_ms_per_img"]
        lines.append("| " + " | ".join([label, _num(parts.get("model server")), _num(parts.get("gateway")),
                                          _num(parts.get("client")), _num(total), _num(cpu["cores_busy"], "{:.2f}"),
                                          _num(cores * 1000 / total if total else None)]) + " |")
    return "\n".join(lines) if len(lines) > 4 else ""


def throughput_budget(figures: dict) -> str:
    """Why the 16-client throughput target is or is not reachable: the CPU per image it allows
    against what the gateway path used, by process, and the ceiling the path's own work sets.

    The ceiling assumes a model server whose TensorFlow costs exactly what the bare model costs at
    its best batch size, and every core busy: ``cores x 1000 / (bare + gateway + client)``. When
    even that is under the target, no tuning of the model server can meet it on this machine.
    """
    rows = figures["rows"]
    best, cpu = rows.get("model", {}).get("best_throughput"), rows.get("gateway", {}).get("cpu") or {}
    if not best or not cpu:
        return ""
    cores = figures.get("cores") or os.cpu_count() or 1
    allowed = cores * 1000 / (TARGET_THROUGHPUT_RATIO * best)
    parts = cpu["ms_per_img"]
    bare_cpu = rows["model"].get("best_cpu_ms_per_img")
    line = (f"CPU budget: {TARGET_THROUGHPUT_RATIO} x {best:.1f} img/s on {cores} cores allows {_num(allowed)} core-ms "
            f"per image; the gateway path used {cpu['total_ms_per_img']:.0f} (model server "
            f"{_num(parts.get('model server'))}, gateway {_num(parts.get('gateway'))}, client "
            f"{_num(parts.get('client'))}); the bare model alone used {_num(bare_cpu)} at its best batch size")
    if bare_cpu and parts.get("gateway") is not None and parts.get("client") is not None:
        ceiling = cores * 1000 / (bare_cpu + parts["gateway"] + parts["client"])
        line += (f". Ceiling: with the model server as cheap as the bare model and every core busy, the "
                 f"gateway path could reach {ceiling:.1f} img/s = {ceiling / best:.2f}x")
    return line


def memory_table(figures: dict) -> str:
    """RSS and cold start of every process, with the bare process for comparison."""
    lines = ["| process | cold start s | RSS ready MB | RSS after load MB | peak RSS MB |", "|---|---|---|---|---|"]
    for entry in figures.get("processes", []):
        lines.append(f"| {entry['name']} | {_num(entry.get('cold_start_s'), '{:.1f}')} "
                     f"| {_num(entry.get('rss_ready_mb'))} | {_num(entry.get('rss_after_mb'))} "
                     f"| {_num(entry.get('peak_mb'))} |")
    return "\n".join(lines)


def targets(figures: dict) -> list[tuple[str, bool | None, str]]:
    """(target, passed or None when not measurable, the figures behind it)."""
    rows = figures["rows"]

    def get(row: str, clients: int, key: str) -> float | None:
        return _cell(rows.get(row, {}), clients, key) if not rows.get(row, {}).get("error") else None

    model_p50, gw_p50, tut_p50 = get("model", 1, "p50_ms"), get("gateway", 1, "p50_ms"), get("tutorial", 1, "p50_ms")
    best = rows.get("model", {}).get("best_throughput")
    gw16 = get("gateway", 16, "throughput")
    gw_errors = sum(level.get("errors", 0) for level in rows.get("gateway", {}).get("levels", {}).values())
    procs = {p["name"]: p for p in figures.get("processes", [])}
    workers = procs.get("gateway worker (max)", {})
    ms, bare = procs.get("model server", {}), procs.get("bare process (same SavedModel)", {})

    def check(ok: bool | None, text: str, name: str) -> tuple[str, bool | None, str]:
        return name, ok, text  # reads better above: the condition first, the name last

    results = []
    if gw_p50 and model_p50:
        results.append(check(gw_p50 <= 1.3 * model_p50, f"{gw_p50:.0f} ms vs 1.3 x {model_p50:.0f} ms = "
                             f"{1.3 * model_p50:.0f} ms ({gw_p50 / model_p50:.2f}x)", "gateway p50 <= 1.3x model p50"))
    else:
        results.append(check(None, "not measured", "gateway p50 <= 1.3x model p50"))
    if gw_p50 and tut_p50:
        results.append(check(tut_p50 >= 4 * gw_p50, f"tutorial {tut_p50:.0f} ms / gateway {gw_p50:.0f} ms = "
                             f"{tut_p50 / gw_p50:.1f}x", "gateway >= 4x faster than tutorial (1 client)"))
    else:
        results.append(check(None, "not measured", "gateway >= 4x faster than tutorial (1 client)"))
    if gw16 and best:
        results.append(check(gw16 >= TARGET_THROUGHPUT_RATIO * best and gw_errors == 0,
                             f"{gw16:.1f} img/s vs {TARGET_THROUGHPUT_RATIO} x {best:.1f} = "
                             f"{TARGET_THROUGHPUT_RATIO * best:.1f} ({gw16 / best:.2f}x), "
                             f"{gw_errors} errors", "gateway 16-client throughput >= 0.85x model best, 0 errors"))
    else:
        results.append(check(None, "not measured", "gateway 16-client throughput >= 0.85x model best, 0 errors"))
    if workers.get("peak_mb"):
        results.append(check(workers["peak_mb"] <= 100, f"peak {workers['peak_mb']:.0f} MB, after load "
                             f"{_num(workers.get('rss_after_mb'))} MB", "gateway RSS <= 100 MB per worker"))
    else:
        results.append(check(None, "not measured", "gateway RSS <= 100 MB per worker"))
    if ms.get("rss_after_mb") and bare.get("rss_after_mb"):
        ratio, peak_ratio = ms["rss_after_mb"] / bare["rss_after_mb"], ms["peak_mb"] / bare["peak_mb"]
        results.append(check(ratio <= 1.3, f"after load {ms['rss_after_mb']:.0f} / {bare['rss_after_mb']:.0f} MB = "
                             f"{ratio:.2f}x; peak {ms['peak_mb']:.0f} / {bare['peak_mb']:.0f} MB = {peak_ratio:.2f}x",
                             "model server RSS <= 1.3x bare process"))
    else:
        results.append(check(None, "not measured", "model server RSS <= 1.3x bare process"))
    return results


def batching_verdict(figures: dict) -> str:
    """Which is better at 16 clients on this machine: batching on or off (throughput, then p99)."""
    lines = []
    for plain, batched in (("model_server", "model_server_batching"), ("gateway", "gateway_batching")):
        off, on = figures["rows"].get(plain, {}), figures["rows"].get(batched, {})
        t_off, t_on = _cell(off, 16, "throughput"), _cell(on, 16, "throughput")
        if not t_off or not t_on:
            continue
        p_off, p_on = _cell(off, 16, "p99_ms"), _cell(on, 16, "p99_ms")
        better = "on" if t_on > t_off * 1.05 else "off" if t_on < t_off * 0.95 else "no clear difference (within 5%)"
        lines.append(f"{plain.replace('_', ' ')} at 16 clients: batching off {t_off:.1f} img/s (p99 {p_off:.0f} ms), "
                     f"on {t_on:.1f} img/s (p99 {p_on:.0f} ms): better = {better}")
    return "\n".join(lines) or "batching: not measured"


def render(figures: dict) -> str:
    """Everything the benchmark prints after the run."""
    flags = f" | model server flags: {figures['model_server_args']}" if figures.get("model_server_args") else ""
    out = [f"# bench: {figures['model']} | images: {', '.join(figures['images'])} | {figures['mode']}{flags}", "",
           table(figures), ""]
    model = figures["rows"].get("model", {})
    if model.get("throughput_by_batch"):
        by_size = sorted(model["throughput_by_batch"].items(), key=lambda item: int(item[0]))
        by_batch = ", ".join(f"batch {size}: {rate:.1f}" for size, rate in by_size)
        out += [f"model in-process throughput (img/s): {by_batch}; best {model['best_throughput']:.1f}", ""]
    cpu, budget = cpu_table(figures), throughput_budget(figures)
    if cpu:
        out += [cpu, ""]
    out += [memory_table(figures), "", batching_verdict(figures), "", "targets:"]
    for name, ok, text in targets(figures):
        out.append(f"  {'PASS' if ok else 'FAIL' if ok is False else 'N/A '}  {name}: {text}")
    if budget:
        out += ["", budget]
    if figures.get("sweep"):
        out += ["", "gateway workers x threads at 16 clients:",
                "| workers x threads | img/s | p50 ms | p99 ms | errors | worker RSS after / peak MB (max) |",
                "|---|---|---|---|---|---|"]
        for entry in figures["sweep"]:
            out.append(f"| {entry['config']} | {_num(entry.get('throughput'), '{:.1f}')} | {_num(entry.get('p50_ms'))} "
                       f"| {_num(entry.get('p99_ms'))} | {entry.get('errors', '-')} "
                       f"| {_num(entry.get('worker_rss_mb'))} / {_num(entry.get('worker_peak_mb'))} |")
    return "\n".join(out)
