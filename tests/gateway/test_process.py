"""The gateway as its users run it: gunicorn, `flask run` in flask_server/, the sample client; and
what it costs: no TensorFlow in the process, start-up time, resident memory while serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.gateway.conftest import REPO_ROOT, TEST_IMAGES, TEST_RATE_LIMITS, closed_port_url
from scripts.processes import gateway_command
from tests.support.processes import free_port, only_line_starting, run_on_held_port, spawn, wait_until

# Every case here runs the gateway or its client as a separate process.
pytestmark = pytest.mark.e2e

SAMPLE_CLIENT = REPO_ROOT / "flask_server" / "flask_sample_request.py"
PHOTO = TEST_IMAGES / "chelsea.jpg"
# Generous bounds: these guard against regressions (TensorFlow creeping in), not for benchmarking.
MAX_START_SECONDS = 5.0
MAX_WORKER_RSS_MB = 100

IMPORT_CHECK = """
import sys, time
started = time.perf_counter()
import flask_server.app as a
a.create_app()
elapsed = time.perf_counter() - started
heavy = sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)
print(f"{elapsed:.3f} {','.join(heavy) or '-'}")
"""


def run_python(code_or_args, env=None, cwd=REPO_ROOT, timeout=60) -> subprocess.CompletedProcess:
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else [sys.executable, *code_or_args]
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_gateway_imports_no_tensorflow_and_builds_fast(scheme):
    # grpc:// builds the gRPC transport (grpcio and hand-written messages), which must stay TF-free too
    url = closed_port_url().replace("http://", f"{scheme}://")
    result = run_python(IMPORT_CHECK + "print('grpc' in sys.modules)", env={"MODEL_SERVER_URL": url})
    assert result.returncode == 0, result.stderr
    elapsed, heavy, grpc_loaded = result.stdout.split()
    print(f"import + create_app ({scheme}): {float(elapsed):.3f} s")
    assert heavy == "-" and grpc_loaded == str(scheme == "grpc")
    assert float(elapsed) < MAX_START_SECONDS


def worker_pid(master_pid: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    return int(children[0])


def test_gunicorn_worker_is_small_and_has_no_tensorflow(gunicorn_gateway):
    photo = PHOTO.read_bytes()
    for _ in range(20):
        response = requests.post(gunicorn_gateway.url + "/v1/models/imageclassifier/predict", data=photo,
                                 headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert response.status_code == 200, response.text
    pid = worker_pid(gunicorn_gateway.popen.pid)
    status = Path(f"/proc/{pid}/status").read_text()
    rss_mb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
    print(f"gunicorn worker VmRSS after 20 predictions: {rss_mb:.1f} MB")
    assert rss_mb < MAX_WORKER_RSS_MB
    assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text()


def test_sample_client_prints_five_predictions(gunicorn_gateway):
    result = run_python([str(SAMPLE_CLIENT), "-i", str(PHOTO), "--url", gunicorn_gateway.url])
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model"] == "imageclassifier" and len(body["predictions"]) == 5
    tutorial = run_python([str(SAMPLE_CLIENT), "-i", str(PHOTO), "--url", gunicorn_gateway.url, "--tutorial"])
    assert tutorial.returncode == 0, tutorial.stderr
    rows = json.loads(tutorial.stdout)
    assert len(rows) == 5 and all(len(row) == 3 for row in rows)


def test_sample_client_fails_clearly():
    result = run_python([str(SAMPLE_CLIENT), "-i", str(PHOTO), "--url", closed_port_url()])
    assert result.returncode == 1 and "error: cannot reach the gateway" in result.stderr
    missing = run_python([str(SAMPLE_CLIENT), "-i", "no-such-file.jpg"])
    assert missing.returncode == 1 and "error: cannot read no-such-file.jpg" in missing.stderr


def test_flask_run_in_the_package_folder_serves(gateway_env):
    """The tutorial's `cd flask_server && flask run` (here on a free port)."""
    port = free_port()
    flask = Path(sys.executable).parent / "flask"
    server = spawn([str(flask), "run", "--port", str(port)], port,
                   env={**gateway_env, "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS}, cwd=REPO_ROOT / "flask_server")
    try:
        assert wait_until(server, "/healthz", timeout=30).json() == {"status": "ok"}
        response = requests.post(server.url + "/v1/models/tiny/predict", data=PHOTO.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 5
    finally:
        server.stop()


def test_busy_port_under_gunicorn_is_one_line_and_exit_1():
    code, log, port = run_on_held_port(lambda port: gateway_command(f"127.0.0.1:{port}", workers=1),
                                       MAX_START_SECONDS * 2, {"MODEL_SERVER_URL": closed_port_url()})
    # test that gunicorn's five retries are replaced by one line naming the address and how to change it
    assert code == 1, log
    failure = only_line_starting(log, "Failed to start gateway. Error: ")
    assert f"127.0.0.1:{port}: Address already in use" in failure and "GATEWAY_BIND" in failure
    assert "Connection in use" not in log and "Traceback" not in log
