"""SIGTERM during load, for the gunicorn gateway and for the model server.

The model server here batches with a 1.5 s batch timeout, so every prediction is in flight for
about 1.5 s: long enough to send SIGTERM in the middle. For each process: the in-flight requests
complete with 200, the process exits with code 0 within a bound, and new connections are refused.
The gateway goes first: the model server test stops the model server it needs.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time

import pytest

from tests.reliability.conftest import (BATCH_TIMEOUT_S, MODEL, MS_PREDICT, PREDICT, gateway_env, predict_ok,
                                        ready, run_clients, write_gateway_models)
from tests.support.processes import ServerProcess, start_gateway

pytestmark = pytest.mark.timeout(120)

IN_FLIGHT = 6
GRACEFUL_TIMEOUT = 15  # graceful_timeout in flask_server/gunicorn.conf.py, which start_gateway uses
# In-flight work ends ~BATCH_TIMEOUT_S after it started; the process must be gone soon after.
# Well under both grace periods (gunicorn 10 s, model server 30 s): nobody waits for the full grace.
EXIT_BOUND = BATCH_TIMEOUT_S + 5.0


@pytest.fixture(scope="module")
def batching_server(launched) -> ServerProcess:
    return ready(launched.batching)


@pytest.fixture(scope="module")
def shutdown_gateway(launched, batching_server):
    toml = write_gateway_models(launched.root / "shutdown.toml", {MODEL: (batching_server.url, MODEL)},
                                launched.root / "labels.txt")
    with start_gateway(gateway_env(toml), threads=IN_FLIGHT + 2) as gateway:
        yield gateway


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED
    return False


def sigterm_under_load(server: ServerProcess, url: str, data: bytes, content_type: str) -> dict:
    """Start IN_FLIGHT requests, SIGTERM the server's main process mid-way; collect what happened."""
    stop = threading.Event()
    threads, results = run_clients(IN_FLIGHT, lambda s: s.post(url, data=data, timeout=30,
                                                               headers={"Content-Type": content_type}),
                                   stop, max_requests=1)
    time.sleep(BATCH_TIMEOUT_S / 3)
    assert not any(results), "requests finished before SIGTERM: nothing was in flight"
    sent_at = time.monotonic()
    os.kill(server.popen.pid, signal.SIGTERM)  # the main process only, as an orchestrator does
    refused_at = None
    while server.alive() or refused_at is None:
        if refused_at is None and refuses_connections(server.port):
            refused_at = time.monotonic()
        if time.monotonic() - sent_at > GRACEFUL_TIMEOUT + 5:
            break
        time.sleep(0.05)
    exited_at = time.monotonic()
    for thread in threads:
        thread.join(10)
    return {"outcomes": [o for mine in results for o in mine], "exit_code": server.popen.poll(),
            "exit_s": exited_at - sent_at, "refused_s": refused_at - sent_at if refused_at else None}


def check_clean_shutdown(name: str, server: ServerProcess, result: dict) -> None:
    outcomes = result["outcomes"]
    refused = "never" if result["refused_s"] is None else f"{result['refused_s']:.2f} s"
    print(f"\n{name}: SIGTERM with {IN_FLIGHT} requests in flight -> {sum(o.status == 200 for o in outcomes)} x 200, "
          f"exit code {result['exit_code']} after {result['exit_s']:.2f} s, new connections refused from {refused}")
    assert len(outcomes) == IN_FLIGHT
    assert [(o.status, o.body or o.error) for o in outcomes if o.status != 200] == []
    assert result["exit_code"] == 0, server.log()[-3000:]
    assert result["exit_s"] < EXIT_BOUND
    assert result["refused_s"] is not None and refuses_connections(server.port)


# gunicorn: in-flight gateway requests (each waiting on the batching model server) finish with 200.
def test_gateway_sigterm_lets_in_flight_requests_finish(shutdown_gateway, batching_server, good_png):
    predict_ok(shutdown_gateway.url, good_png)  # warm: version and export_info cached
    result = sigterm_under_load(shutdown_gateway, shutdown_gateway.url + PREDICT, good_png, "image/png")
    check_clean_shutdown("gunicorn gateway", shutdown_gateway, result)
    assert batching_server.alive()


# model server: in-flight predictions (queued in the batch scheduler) finish with 200.
def test_model_server_sigterm_lets_in_flight_requests_finish(batching_server):
    body = ('{"instances": [%s]}' % str([[[0.5] * 3] * 32] * 32)).encode()
    result = sigterm_under_load(batching_server, batching_server.url + MS_PREDICT, body, "application/json")
    check_clean_shutdown("model server", batching_server, result)
    assert all(len(o.body["predictions"][0]) == 10 for o in result["outcomes"])
    assert "Received SIGTERM" in batching_server.log()
