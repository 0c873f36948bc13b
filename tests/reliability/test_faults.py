"""Faults between the gateway and the model server, with real processes.

One gunicorn gateway (GATEWAY_BACKEND_TIMEOUT=1, GATEWAY_BACKEND_CONNECT_TIMEOUT=2) serves one route
per fault:

    down         nothing listens (connection refused)
    hung         a socket that listens but never accepts, its backlog full (connect timeout)
    slow         a tiny HTTP server that accepts and sleeps: a stuck upstream, not a copy of ours
    restartable  a real model server that the test SIGKILLs and restarts on the same port
    versions     the real model server; the test writes half-written and broken versions

Measured figures are printed (run with -s to see them) and bounded by the assertions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.reliability.conftest import (MODEL, PREDICT, VERSIONS, ModelServers, Stack, assert_gateway_error,
                                        copy_version, gateway_env, predict_ok, ready, run_clients,
                                        write_gateway_models)
from tests.support.processes import ServerProcess, free_port, start_gateway

pytestmark = pytest.mark.timeout(120)

BACKEND_TIMEOUT = 1.0
CONNECT_TIMEOUT = 2.0
SLOW_UPSTREAM_SLEEP = 5.0


# --- the stand-ins for broken upstreams ------------------------------------------------------------

@contextlib.contextmanager
def hung_listener() -> Iterator[str]:
    """A port whose accept queue is full: SYNs are dropped, so connecting times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # fills the backlog of 1
            yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def sleeping_upstream(seconds: float) -> Iterator[str]:
    """An HTTP server that reads the request, then sleeps ``seconds`` before any reply."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            release.wait(seconds)
            body = b'{"error": "too late"}'
            with contextlib.suppress(OSError):  # the gateway gave up long ago
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def fault_gateway(launched: ModelServers, model_server) -> Iterator[ServerProcess]:
    with hung_listener() as hung, sleeping_upstream(SLOW_UPSTREAM_SLEEP) as slow:
        toml = write_gateway_models(launched.root / "faults.toml", {
            "down": (f"http://127.0.0.1:{free_port()}", MODEL), "hung": (hung, MODEL), "slow": (slow, MODEL),
            "restartable": (launched.restartable.url, MODEL), VERSIONS: (model_server.url, VERSIONS),
        }, launched.root / "labels.txt")
        env = gateway_env(toml, GATEWAY_BACKEND_TIMEOUT=str(BACKEND_TIMEOUT),
                          GATEWAY_BACKEND_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
        with start_gateway(env, threads=8) as gateway:
            yield gateway


def timed_predict(gateway: ServerProcess, route: str, image: bytes, timeout: float = 30) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(f"{gateway.url}/v1/models/{route}/predict", data=image,
                             headers={"Content-Type": "image/png"}, timeout=timeout)
    return response, time.monotonic() - started


# --- the model server is unreachable or stuck ----------------------------------------------------

# Nothing listening: 503 at once, well inside the connect timeout.
def test_model_server_down_is_503_fast(fault_gateway, good_png):
    response, elapsed = timed_predict(fault_gateway, "down", good_png)
    body = assert_gateway_error(response, 503, "model server unavailable for model")
    assert "http://" not in body["error"]  # the model server's address stays internal
    print(f"\n503 with the model server down: {elapsed * 1000:.0f} ms")
    assert elapsed < CONNECT_TIMEOUT + 2


# A model server that never accepts: 503 after the connect timeout, not a hang.
def test_model_server_not_accepting_is_503_after_the_connect_timeout(fault_gateway, good_png):
    response, elapsed = timed_predict(fault_gateway, "hung", good_png)
    assert_gateway_error(response, 503, f"no connection within {CONNECT_TIMEOUT:g} s")
    print(f"\n503 with a model server not accepting: {elapsed:.2f} s (connect timeout {CONNECT_TIMEOUT:g} s)")
    assert CONNECT_TIMEOUT - 0.2 <= elapsed < CONNECT_TIMEOUT + 2


# A model server that accepts and then sleeps: 504 after GATEWAY_BACKEND_TIMEOUT.
def test_slow_model_server_is_504_after_the_backend_timeout(fault_gateway, good_png):
    response, elapsed = timed_predict(fault_gateway, "slow", good_png)
    assert_gateway_error(response, 504, f"did not answer within {BACKEND_TIMEOUT:g} s")
    print(f"\n504 with a slow model server: {elapsed:.2f} s (backend timeout {BACKEND_TIMEOUT:g} s)")
    assert BACKEND_TIMEOUT - 0.1 <= elapsed < BACKEND_TIMEOUT + 1.5


# While backends hang, liveness stays instant and readiness answers (503) instead of hanging.
def test_probes_answer_while_backends_hang(fault_gateway, good_png):
    stop = threading.Event()
    threads, _ = run_clients(3, lambda s: s.post(f"{fault_gateway.url}/v1/models/hung/predict", data=good_png,
                                                 headers={"Content-Type": "image/png"}, timeout=30), stop, 1)
    time.sleep(0.3)
    started = time.monotonic()
    assert requests.get(fault_gateway.url + "/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.5
    ready_response = requests.get(fault_gateway.url + "/readyz", timeout=30)
    assert ready_response.status_code == 503
    assert {m["model"]: m["state"] for m in ready_response.json()["models"]}["down"] == "UNAVAILABLE"
    for thread in threads:
        thread.join(10)


# --- the model server dies and comes back ----------------------------------------------------------

# SIGKILL, then a restart on the same port: the SAME gateway process serves again by itself.
@pytest.mark.e2e
def test_gateway_recovers_after_model_server_is_killed_and_restarted(fault_gateway, launched, good_png):
    ready(launched.restartable)
    predict_ok(fault_gateway.url, good_png, "restartable")
    gateway_pids = (fault_gateway.popen.pid, worker_pids(fault_gateway))
    os.killpg(launched.restartable.popen.pid, signal.SIGKILL)
    launched.restartable.popen.wait(10)

    response, elapsed = timed_predict(fault_gateway, "restartable", good_png)
    assert_gateway_error(response, 503, "model server unavailable for model")
    print(f"\n503 after SIGKILL: {elapsed * 1000:.0f} ms")

    restarted = launched.start(**launched.options["restartable"])
    launched.restartable = restarted  # the session teardown stops this one
    ready(restarted)
    back_at = time.monotonic()
    deadline = back_at + 10
    while timed_predict(fault_gateway, "restartable", good_png)[0].status_code != 200:
        assert time.monotonic() < deadline, "gateway did not recover within 10 s of the model server being back"
        time.sleep(0.1)
    print(f"gateway served again {1000 * (time.monotonic() - back_at):.0f} ms after the model server was ready")
    for _ in range(5):
        predict_ok(fault_gateway.url, good_png, "restartable")
    assert (fault_gateway.popen.pid, worker_pids(fault_gateway)) == gateway_pids  # no gateway restart


def worker_pids(server: ServerProcess) -> list[int]:
    pid = server.popen.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return sorted(int(p) for p in children.read().split())


# --- half-written and broken versions on disk ------------------------------------------------------

def version_states(server: ServerProcess, model: str) -> dict[int, dict]:
    status = requests.get(f"{server.url}/v1/models/{model}", timeout=5).json()["model_version_status"]
    return {int(v["version"]): v for v in status}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# A half-written version is ignored, a broken one is reported END with its error, the old version
# keeps serving throughout, and a later good version takes over.
def test_broken_versions_never_interrupt_serving(fault_gateway, launched, model_server, good_png):
    base = launched.base(VERSIONS)
    ready(model_server, VERSIONS)
    assert predict_ok(fault_gateway.url, good_png, VERSIONS)["model_version"] == 1

    half = base / "2"
    (half / "variables").mkdir(parents=True)
    (half / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)  # copy in progress
    time.sleep(2.5)  # more than two polls
    assert set(version_states(model_server, VERSIONS)) == {1}
    assert predict_ok(fault_gateway.url, good_png, VERSIONS)["model_version"] == 1

    broken = base / "3"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a protocol buffer \xff\xfe" * 10)
    failed = wait_for(lambda: version_states(model_server, VERSIONS).get(3, {}).get("state") == "END"
                      and version_states(model_server, VERSIONS)[3], 15, "version 3 to fail")
    assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"], failed
    assert version_states(model_server, VERSIONS)[1]["state"] == "AVAILABLE"
    for _ in range(3):
        assert predict_ok(fault_gateway.url, good_png, VERSIONS)["model_version"] == 1

    copy_version(launched.base(MODEL) / "1", base, 4)
    wait_for(lambda: predict_ok(fault_gateway.url, good_png, VERSIONS)["model_version"] == 4, 20,
             "the gateway to serve version 4")
    wait_for(lambda: version_states(model_server, VERSIONS)[1]["state"] == "END", 20, "version 1 to unload")
    states = version_states(model_server, VERSIONS)
    assert states[4]["state"] == "AVAILABLE" and states[3]["state"] == "END" and 2 not in states


# --- configured limits under load -----------------------------------------------------------------

# 32 concurrent clients through a backend pool of 4 connections: no deadlock, no error.
def test_pool_of_4_serves_32_concurrent_clients(stack: Stack, good_png):
    stop = threading.Event()
    started = time.monotonic()
    threads, results = run_clients(32, lambda s: s.post(stack.gateway.url + PREDICT, data=good_png,
                                                        headers={"Content-Type": "image/png"}, timeout=30),
                                   stop, max_requests=4)
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    outcomes = [o for mine in results for o in mine]
    assert not any(thread.is_alive() for thread in threads), "clients still blocked after 60 s"
    assert len(outcomes) == 128
    assert [o for o in outcomes if o.status != 200] == []
    print(f"\n32 clients x 4 requests through a pool of 4: {elapsed:.1f} s, {len(outcomes) / elapsed:.0f} req/s")
