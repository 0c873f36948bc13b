"""scripts/port_check.py and the readiness check that only believes the process it started."""

from __future__ import annotations

import sys

import pytest

from scripts import port_check
from scripts.port_check import PortUse, busy_ports, listener_pids
from scripts.processes import ChildProcess, model_state, wait_for_model
from tests.support.processes import free_port

REST = PortUse(0, "model server REST API", "--rest-api-port", "REST_API_PORT")
GATEWAY = PortUse(0, "gateway", "--gateway-port", "GATEWAY_PORT")

# Something else on the port that answers exactly like a model server with the model AVAILABLE.
IMPOSTOR = """
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def use(template: PortUse, port: int) -> PortUse:
    return PortUse(port, template.what, template.flag, template.make_variable)


def test_free_ports_have_no_problems():
    assert busy_ports("127.0.0.1", [use(REST, free_port()), use(GATEWAY, free_port())]) == []


def test_the_same_port_twice_is_one_problem():
    port = free_port()
    problems = busy_ports("127.0.0.1", [use(REST, port), use(GATEWAY, port)])
    assert len(problems) == 1
    assert f"port {port}" in problems[0] and "--rest-api-port" in problems[0] and "--gateway-port=PORT" in problems[0]


def test_listener_pids_and_command_come_from_proc(tmp_path):
    # test the /proc/net/tcp parsing on a fabricated table: only LISTEN (0A) rows on the port count
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = ("   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
            "   1: 0100007F:2328 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n")
    (proc / "net" / "tcp").write_text(header + rows)
    for pid, inode in ((41, 111), (42, 222)):
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "fd" / "3").symlink_to(f"socket:[{inode}]")
        (proc / str(pid) / "cmdline").write_bytes(b"python3\0-m\0http.server\0" + str(pid).encode() + b"\0")
    assert listener_pids(9000, proc) == {41}
    assert listener_pids(9001, proc) is None
    assert port_check.describe_holder(9000, proc) == "pid 41 (python3 -m http.server 41)"


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_readiness_is_only_accepted_from_the_process_that_was_started():
    port = free_port()
    impostor = ChildProcess("impostor", [sys.executable, "-c", IMPOSTOR, str(port)], echo=False)
    ours = ChildProcess("model_server", [sys.executable, "-c", "import time; time.sleep(60)"], echo=False)
    try:
        url = f"http://127.0.0.1:{port}"
        # test that the impostor's perfect answer is refused, naming who gave it
        with pytest.raises(TimeoutError, match=f"port {port} answered by pid {impostor.pid}"):
            wait_for_model(url, "m", ours, timeout=3)
        # test that the same answer is accepted from the process that owns the port
        assert wait_for_model(url, "m", impostor, timeout=10) >= 0
    finally:
        impostor.stop()
        ours.stop()


class FakeResponse:
    def __init__(self, status_code: int, body):
        self.status_code, self._body = status_code, body

    def json(self):
        return self._body


@pytest.mark.parametrize(("status", "body", "done"), [
    (200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}, True),
    (200, {"model_version_status": [{"version": "1", "state": "LOADING"}]}, False),
    (200, ["AVAILABLE"], False),                  # JSON, but not a status object
    (200, {"status": "ok"}, False),               # some other service's health answer
    (404, {"error": "not found"}, False),
])
def test_model_state_needs_a_model_status_answer(status, body, done):
    assert model_state(FakeResponse(status, body))[1] is done
