"""scripts/processes.py: the servers' command lines, readiness states, and child processes.

The command-line and state helpers are pure; the ``ChildProcess`` cases start small Python
children (marked e2e) to check what only a real process shows: its log, its exit code, its group.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from scripts import processes


def response(status: int, body: bytes = b"") -> requests.Response:
    """A requests.Response as the model server would have sent it (no network involved)."""
    answer = requests.Response()
    answer.status_code = status
    answer._content = body
    return answer


def test_free_port_can_be_bound_on_loopback():
    port = processes.free_port()
    with socket.socket() as sock:
        sock.bind((processes.LOOPBACK, port))
    assert 0 < port < 65536


@pytest.mark.parametrize("status, body, expected", [
    (200, b'{"model_version_status": [{"version": "2", "state": "LOADING"}, {"version": "1", "state": "AVAILABLE"}]}',
     ("AVAILABLE", True)),
    (200, b'{"model_version_status": [{"version": "1", "state": "LOADING"}]}', ("LOADING", False)),
    (200, b'{"model_version_status": []}', ("no versions yet", False)),
    (404, b'{"error": "Could not find any versions of model m"}', ("HTTP 404", False)),
])
def test_model_state_is_done_once_a_version_is_available(status, body, expected):
    assert processes.model_state(response(status, body)) == expected


def test_http_ok_state():
    assert processes.http_ok_state(response(200)) == ("HTTP 200", True)
    assert processes.http_ok_state(response(503)) == ("HTTP 503", False)


def test_gateway_env_passes_models_config_only_when_set(monkeypatch):
    monkeypatch.delenv("MODELS_CONFIG", raising=False)
    assert processes.gateway_env("http://127.0.0.1:1") == {"MODEL_SERVER_URL": "http://127.0.0.1:1"}
    monkeypatch.setenv("MODELS_CONFIG", "/etc/models.toml")
    assert processes.gateway_env("http://127.0.0.1:1")["MODELS_CONFIG"] == "/etc/models.toml"


def test_real_server_gets_a_grpc_port_ours_gets_the_host(monkeypatch):
    monkeypatch.setattr(processes.shutil, "which", lambda _name: "/usr/bin/tensorflow_model_server")
    real = processes.model_server_command("m", Path("/models/m"), 9001)
    assert real[:2] == ["/usr/bin/tensorflow_model_server", "--port=8500"]
    assert not any(arg.startswith("--rest_api_host") for arg in real)
    monkeypatch.setattr(processes.shutil, "which", lambda _name: None)
    ours = processes.model_server_command("m", Path("/models/m"), 9001, host="0.0.0.0")
    assert ours[1:4] == ["-m", "model_server", "--port=0"] and "--rest_api_host=0.0.0.0" in ours
    assert "--model_base_path=/models/m" in ours and "--rest_api_port=9001" in ours
    # a gRPC port reaches ours as --port, and replaces the real server's default
    assert processes.model_server_command("m", Path("/models/m"), 9001, grpc_port=8600)[3] == "--port=8600"
    assert f"--file_system_poll_wait_seconds={processes.DEFAULT_POLL_WAIT_SECONDS}" in ours
    # test that the tests' choice (real_if_installed=False) is our server even when the real one is installed
    monkeypatch.setattr(processes.shutil, "which", lambda _name: "/usr/bin/tensorflow_model_server")
    tests_own = processes.model_server_command(None, None, 9001, poll_wait_seconds=None, real_if_installed=False,
                                               extra_args=["--model_config_file=/c"])
    assert tests_own[1:3] == ["-m", "model_server"] and tests_own[-1] == "--model_config_file=/c"
    assert not any(arg.startswith(("--model_name", "--model_base_path", "--file_system_poll")) for arg in tests_own)


def test_gateway_command_runs_the_production_config():
    args = processes.gateway_command("127.0.0.1:1234", workers=1, threads=2, extra_args=["--log-level", "debug"])
    assert args[args.index("--config") + 1] == str(processes.GUNICORN_CONF)
    assert args[args.index("--bind") + 1] == "127.0.0.1:1234"
    assert args[args.index("--workers") + 1] == "1" and args[args.index("--threads") + 1] == "2"
    assert args[-3:] == ["--log-level", "debug", processes.GATEWAY_APP]
    # test that without overrides the config file's own workers and threads apply
    assert "--workers" not in processes.gateway_command("127.0.0.1:1234")


# -- child processes -------------------------------------------------------------------------------

def python_child(code: str, **options) -> processes.ChildProcess:
    return processes.ChildProcess("child", [sys.executable, "-c", textwrap.dedent(code)], echo=False, **options)


@pytest.mark.e2e
def test_child_dying_during_start_up_reports_its_log():
    child = python_child("print('boom: bad flag'); raise SystemExit(3)")
    with pytest.raises(processes.ChildDied, match="boom: bad flag"):
        processes.wait_for_http_ok(f"http://127.0.0.1:{processes.free_port()}/readyz", child, timeout=20)
    assert child.stop() == 3


@pytest.mark.e2e
def test_wait_times_out_with_the_last_state_and_lines():
    child = python_child("import time; print('still starting', flush=True); time.sleep(60)")
    try:
        with pytest.raises(TimeoutError, match=r"(?s)last state: connecting.*still starting"):
            processes.wait_for_http_ok(f"http://127.0.0.1:{processes.free_port()}/", child, timeout=1)
    finally:
        child.stop()


@pytest.mark.e2e
def test_stop_requested_while_waiting():
    child = python_child("import time; time.sleep(60)")
    stop = processes.threading.Event()
    stop.set()
    try:
        with pytest.raises(processes.StopRequested):
            processes.wait_for_http_ok(f"http://127.0.0.1:{processes.free_port()}/", child, timeout=30, stop=stop)
    finally:
        child.stop()


@pytest.mark.e2e
def test_wait_for_model_reports_each_state_change(tmp_path):
    # A stand-in that answers LOADING twice, then AVAILABLE: what a model server says while it loads.
    port = processes.free_port()
    child = python_child(f"""
        import http.server, json
        answers = iter(["LOADING", "LOADING", "AVAILABLE"])
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({{"model_version_status": [{{"version": "1", "state": next(answers, "AVAILABLE")}}]}})
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                self.wfile.write(body.encode())
        http.server.HTTPServer(("127.0.0.1", {port}), Handler).serve_forever()
    """)
    seen = []
    try:
        elapsed = processes.wait_for_model(f"http://127.0.0.1:{port}", "m", child, timeout=30,
                                           on_state=lambda state, _elapsed: seen.append(state))
    finally:
        child.stop()
    assert elapsed > 0
    assert seen[-2:] == ["LOADING", "AVAILABLE"] and seen.count("LOADING") == 1  # changes only


@pytest.mark.e2e
def test_stop_ends_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    child = python_child(f"""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("ready", flush=True)
        time.sleep(60)
    """)
    deadline = time.monotonic() + 20
    while "ready" not in child.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert child.stop() == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(grandchild), "a grandchild outlived stop()"
    assert not child.alive()


@pytest.mark.e2e
def test_echo_prefixes_lines_and_keeps_a_log_file(tmp_path, capfd):
    log_path = tmp_path / "child.log"
    child = processes.ChildProcess("named", [sys.executable, "-c", "print('one'); print('two')"], echo=True,
                                   log_path=log_path)
    child.popen.wait(20)
    assert child.stop() == 0
    assert "[named] one\n[named] two" in capfd.readouterr().out
    assert log_path.read_text() == "one\ntwo\n"
    assert child.tail(1) == "two"


@pytest.mark.e2e
def test_child_sees_the_repository_on_its_python_path():
    child = python_child("import scripts.processes, sys; print(scripts.processes.__file__)", cwd=Path("/"))
    child.popen.wait(20)
    child.stop()
    assert child.log().strip() == str(processes.REPO_ROOT / "scripts" / "processes.py")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) is not running
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"
