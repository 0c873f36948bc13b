"""Start-up when a configured model cannot be loaded: what tensorflow_model_server does.

Its ServerCore waits (without a timeout) until every configured model has a version AVAILABLE or
has given up after ``--max_num_load_retries`` retries ``--load_retry_interval_micros`` apart; if one
gave up, main() prints ``Failed to start server. Error: ...`` and exits with -1 (255): the other
models are not served. Ours must do the same, say so in one log line when the first load fails,
and never open the REST port meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.model_server.conftest import export_simple_save, model_config_text
from tests.support.processes import REPO_ROOT, free_port, port_closed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EXIT_START_FAILED = 255


def broken_model(base_path):
    (base_path / "1").mkdir(parents=True)
    (base_path / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    return base_path


def start(args, port):
    command = [sys.executable, "-m", "model_server", f"--rest_api_port={port}", "--rest_api_host=127.0.0.1", *args]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_until_exit(args, timeout: float = 90.0) -> tuple[int, str, str, bool]:
    """Run the server until it exits; also report whether its REST port ever accepted a connection."""
    port = free_port()
    process = start(args, port)
    opened = False
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            opened = opened or not port_closed(port)
            time.sleep(0.1)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr, opened


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "failed to load:" in line]


def test_a_model_that_never_loads_stops_the_server_after_its_retries(tmp_path):
    base = broken_model(tmp_path / "broken")
    code, stdout, stderr, opened = run_until_exit(
        ["--model_name=broken", f"--model_base_path={base}", "--max_num_load_retries=2",
         "--load_retry_interval_micros=500000"])
    assert code == EXIT_START_FAILED, stderr
    assert not opened
    assert stdout.strip() == (f"Failed to start server. Error: UNKNOWN: 1 model(s) did not become available: "
                              f"{{{{{{name: broken version: 1}} due to error: DATA_LOSS: Can't parse "
                              f"{base / '1' / 'saved_model.pb'} as binary proto}}, }}")
    (line,) = failure_lines(stderr)
    assert "Model broken version 1 failed to load: DATA_LOSS" in line
    assert "retrying 2 more time(s), every 0.5 s" in line and "the server exits" in line
    assert stderr.count("Retrying of Loading servable: {name: broken version: 1} retry:") == 2


def test_the_other_models_are_not_served_either(tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"good": export_simple_save(tmp_path / "good" / "1").parent,
                                         "broken": broken_model(tmp_path / "broken")}))
    code, stdout, stderr, opened = run_until_exit([f"--model_config_file={config}", "--max_num_load_retries=0"])
    assert code == EXIT_START_FAILED, stderr
    assert not opened
    assert "1 model(s) did not become available: {{{name: broken version: 1} due to error: DATA_LOSS" in stdout
    assert "Successfully loaded servable version {name: good version: 1}" in stderr
    (line,) = failure_lines(stderr)
    assert "not retrying (--max_num_load_retries=0)" in line
