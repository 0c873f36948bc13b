"""The benchmark harness still runs end to end (a quick run with a tiny model), and its table logic.

No timing assertions: figures on a shared 2-core machine are noise at this scale. What must hold
is that every row is measured, every response passes its checks, and the JSON has every figure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from bench import cache, report, threads, wire
from bench.procinfo import cpu_seconds
from bench.stats import percentile
from tests.support.processes import REPO_ROOT

SMOKE_TIMEOUT = 150


@pytest.mark.e2e
def test_quick_run_measures_every_row_without_errors(tmp_path):
    out, logs = tmp_path / "bench.json", tmp_path / "logs"
    threads = "--tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=2"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--tiny", "--json", str(out), "--keep-logs", str(logs),
                           f"--model-server-args={threads}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # test that --model-server-args reaches every model server (TensorFlow reports the threads it uses)
    for name in ("model_server", "model_server_batching"):
        assert "TensorFlow threads: intra-op 1, inter-op 2" in (logs / f"{name}.log").read_text()
    assert f"model server flags: {threads}" in proc.stdout
    figures = json.loads(out.read_text())
    rows = figures["rows"]
    for key in ("model", "model_server", "gateway", "tutorial", "v2_binary", "v2_json", "model_server_batching",
                "gateway_batching"):
        assert "error" not in rows[key], rows[key]
    for key in ("model_server", "gateway", "tutorial", "v2_binary", "v2_json", "model_server_batching",
                "gateway_batching"):
        for clients, level in rows[key]["levels"].items():
            assert level["errors"] == 0 and level["requests_ok"] > 0, (key, clients, level)
    # test that the CPU each process spent per image at 16 clients is recorded and adds up
    assert rows["model"]["best_cpu_ms_per_img"] > 0
    for key in ("model_server", "gateway", "tutorial", "v2_binary", "v2_json", "model_server_batching",
                "gateway_batching"):
        cpu = rows[key]["cpu"]
        roles = {"model server", "client"} | ({"gateway"} if key.startswith("gateway") else set())
        assert set(cpu["ms_per_img"]) == roles, (key, cpu)
        assert all(value >= 0 for value in cpu["ms_per_img"].values()) and cpu["ms_per_img"]["client"] > 0
        assert math.isclose(cpu["total_ms_per_img"], sum(cpu["ms_per_img"].values()))
        assert 0 < cpu["cores_busy"] <= figures["cores"] + 0.5, (key, cpu)
    assert rows["gateway"]["cpu"]["ms_per_img"]["gateway"] > 0
    assert "CPU per image at 16 clients" in proc.stdout and "| gateway (gunicorn) | " in proc.stdout
    names = {p["name"] for p in figures["processes"]}
    assert {"bare process (same SavedModel)", "model server", "gateway worker (max)"} <= names
    # test that the printed report has the table and a verdict for every target
    assert "| gateway (gunicorn) |" in proc.stdout and "| model server v2 (binary uint8) |" in proc.stdout
    assert proc.stdout.count("PASS") + proc.stdout.count("FAIL") == 5, proc.stdout


def test_report_marks_unmeasured_rows_and_targets():
    figures = {"model": "m", "images": ["a.jpg"], "mode": "quick", "processes": [],
               "rows": {"model": {"levels": {"1": {"p50_ms": 80.0, "p99_ms": 90.0, "errors": 0}}},
                        "gateway": {"error": "ChildDied: boom"}}}
    text = report.render(figures)
    assert "| gateway (gunicorn) | not measured: ChildDied: boom |" in text
    assert text.count("N/A ") == 5


def test_budget_line_states_the_target_allowance_and_the_ceiling_of_the_paths_own_work():
    figures = {"cores": 2, "rows": {
        "model": {"best_throughput": 20.0, "best_cpu_ms_per_img": 90.0},
        "gateway": {"cpu": {"ms_per_img": {"model server": 110.0, "gateway": 15.0, "client": 5.0},
                            "total_ms_per_img": 130.0, "cores_busy": 1.9}}}}
    line = report.throughput_budget(figures)
    # 0.85 x 20 img/s on 2 cores -> 2000 / 17 = 118 core-ms per image allowed
    assert "allows 118 core-ms per image; the gateway path used 130" in line
    # with the model server at the bare model's 90: 2000 / (90 + 15 + 5) = 18.2 img/s = 0.91x
    assert line.endswith("could reach 18.2 img/s = 0.91x")
    del figures["rows"]["model"]["best_cpu_ms_per_img"]
    assert "Ceiling" not in report.throughput_budget(figures)


@pytest.mark.e2e
def test_threads_measures_each_setting_in_its_own_process():
    proc = subprocess.run([sys.executable, "-m", "bench.threads", "--tiny", "--images", "8", "--latency-calls", "4",
                           "--settings", "0x0,1x2", "--callers", "1,2", "--batches", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 0x0 |", "| 1x2 |"))]
    assert len(rows) == 2, proc.stdout
    for row in rows:
        # p50, then "img/s, core-ms/img" for 1 and 2 callers: every figure measured, none zero
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        figures = [float(cell.split(",")[0]) for cell in cells]
        assert len(figures) == 3 and all(value > 0 for value in figures), row


def test_thread_settings_parse_and_reject_negative_counts():
    assert threads.parse_setting("1x2") == (1, 2) and threads.parse_setting("0X0") == (0, 0)
    with pytest.raises(ValueError):
        threads.parse_setting("-1x2")


def test_wire_measures_each_signature_with_the_projects_code(capsys):
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    results = wire.measure(pixels, rounds=3)
    assert list(results) == ["serving_uint8", "serving_bytes", "serving_default", "v2 serving_uint8 (binary)",
                             "v2 serving_bytes (binary)", "v2 serving_default (binary)", "v2 serving_default (JSON)"]
    # Same envelope (both signature names have 13 letters); base64 of 1 byte per value against 4.
    values = 24 * 20 * 3
    uint8_body, float_body = (round(results[s]["body_kb"] * 1000) for s in ("serving_uint8", "serving_bytes"))
    assert uint8_body > values * 4 // 3 and float_body - uint8_body == values * 4 * 4 // 3 - values * 4 // 3
    assert all(row["gateway_ms"] > 0 and row["server_ms"] > 0 for row in results.values())
    # v2 binary: the raw bytes (plus a 4-byte length per BYTES element) after the same JSON header size.
    v2_uint8, v2_bytes, v2_float = (round(results[f"v2 {s} (binary)"]["body_kb"] * 1000)
                                    for s in ("serving_uint8", "serving_bytes", "serving_default"))
    assert v2_bytes - v2_uint8 == values * 3 and v2_uint8 > values
    assert results["v2 serving_default (JSON)"]["body_kb"] > results["v2 serving_default (binary)"]["body_kb"]
    assert wire.main(["--size", "16", "--rounds", "2"]) == 0
    table = capsys.readouterr().out
    assert "at 16x16, 2 rounds" in table and "| serving_uint8 |" in table and "| 1.0x |" in table


def test_cpu_seconds_counts_this_process_and_ignores_missing_pids():
    before = cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn ~0.3 s of CPU
        pass
    assert cpu_seconds([os.getpid()]) - before >= 0.2
    assert cpu_seconds([2 ** 22 + 1]) == 0  # above Linux's pid_max: never a live process


def test_percentile_interpolates_like_numpy():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([3, 1, 2], 100) == 3


# --- bench.cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["chelsea.jpg", "astronaut.png"])
def test_cache_variants_keep_the_pixels_and_change_the_bytes(name):
    import io

    import numpy as np
    from PIL import Image

    original = (REPO_ROOT / "test_images" / name).read_bytes()
    variants = [cache.unique_variant(original, n) for n in range(3)]
    assert len({original, *variants}) == 4
    pixels = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
    for variant in variants:
        image = Image.open(io.BytesIO(variant))
        image.load()  # a broken chunk or segment would fail here (PNG CRCs are checked)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), pixels)


def test_cache_table_gives_ratios_to_no_cache_and_miss_over_hit():
    latencies = {"no cache": [0.080, 0.082], "memory miss": [0.080, 0.084], "memory hit": [0.004, 0.004]}
    table = cache.format_table(latencies)
    assert "| memory hit | 4.0 | 4.0 | 0.05x |" in table
    # 82 ms / 4 ms
    assert table.endswith("memory: a hit answers in 4.0 ms against 82.0 ms for a miss (20.5x faster)")


@pytest.mark.e2e
def test_cache_benchmark_runs_every_row_without_errors():
    proc = subprocess.run([sys.executable, "-m", "bench.cache", "--tiny", "--rounds", "3"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = ["no cache", "memory miss", "memory hit"]
    if "no redis row" not in proc.stderr:
        rows += ["redis miss", "redis hit"]
    for row in rows:
        assert f"| {row} | " in proc.stdout, proc.stdout
    assert proc.stdout.count("a hit answers in") == len(rows) // 2


@pytest.mark.e2e
def test_grpc_vs_rest_measures_every_path_without_errors():
    proc = subprocess.run([sys.executable, "-m", "bench.grpc_vs_rest", "--tiny", "--requests", "4", "--requests-16", "16"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout
    for path in ("direct REST", "direct gRPC", "gateway (REST hop)", "gateway (gRPC hop)"):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {path} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(float(cell) > 0 for cell in cells[1:5]) and cells[5] == "0", row
    # raw bytes in a tensor against base64 in JSON: gRPC puts fewer bytes on the hop
    ratio_row = next(line for line in proc.stdout.splitlines() if line.startswith("| gateway |"))
    assert float(ratio_row.rsplit("=", 1)[1].strip(" x|")) < 1


@pytest.mark.e2e
def test_gateway_signatures_measures_both_routes_without_errors():
    proc = subprocess.run([sys.executable, "-m", "bench.gateway_signatures", "--kind", "tiny", "--requests", "3"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {line.split("|")[2].strip(): line.split("|") for line in proc.stdout.splitlines()
            if line.startswith("| topk") or line.startswith("| uint8")}
    assert set(rows) == {"serving_topk", "serving_uint8"}
    # every row has its latency and reply size, and no request failed
    assert all(float(row[3]) > 0 and int(row[6]) > 0 and row[7].strip() == "0" for row in rows.values())


def run_module(module: str, *args: str) -> list[list[str]]:
    """Run ``python -m module --tiny args``; the cells of its table's rows (header and rule left out)."""
    proc = subprocess.run([sys.executable, "-m", module, "--tiny", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]


@pytest.mark.e2e
def test_execution_bench_measures_every_row_without_errors():
    rows = run_module("bench.execution", "--requests", "4")
    assert len(rows) == 6  # 4 bare processes (function/Session x oneDNN on/off) + 2 model servers
    assert all(row[1] == "4" and row[4] == "0" for row in rows), rows  # calls, errors
    assert rows[0][5] == "1.00x"  # the floor is its own reference


@pytest.mark.e2e
def test_warmup_bench_swaps_with_and_without_the_file():
    rows = run_module("bench.warmup", "--rounds", "1")
    assert [row[0] for row in rows] == ["with warm-up file", "without warm-up file"]
    assert all(row[1] == "1" and float(row[3]) > 0 for row in rows), rows
