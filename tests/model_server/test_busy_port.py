"""The REST port is bound before any model loads: a busy one is one TF Serving-style line and exit 1,
and while loading, clients are refused rather than queued."""

from __future__ import annotations

import time

import pytest
import requests

from scripts.processes import LOOPBACK, model_server_command, model_state
from tests.support.processes import free_port, only_line_starting, port_closed, run_on_held_port, spawn
from tests.support.tiny_models import export_tiny_classifier

EXIT_TIMEOUT = 30.0  # bounds a hang; a busy port is reported well before TensorFlow is imported
LOADED_LINE = "Loaded tiny version 1 from"  # model_server.servable logs it once the version is loaded


@pytest.fixture(scope="module")
def tiny_base_path(tmp_path_factory):
    base_path = tmp_path_factory.mktemp("busy") / "tiny"
    export_tiny_classifier(base_path, 1)
    return base_path


@pytest.mark.e2e
def test_busy_rest_port_is_one_line_and_exit_1(tiny_base_path):
    def command(port: int) -> list[str]:
        return model_server_command("tiny", tiny_base_path, port, LOOPBACK, real_if_installed=False)

    code, log, port = run_on_held_port(command, EXIT_TIMEOUT)
    # test that the reason is TF Serving's sentence, naming the address, and nothing else went wrong
    assert code == 1, log
    failure = only_line_starting(log, "Failed to start server. Error: ")
    assert f"{LOOPBACK}:{port}" in failure and "Address already in use" in failure
    assert "Traceback" not in log
    # test that no model was loaded first
    assert "Loading servable" not in log and "TensorFlow threads" not in log, log


@pytest.mark.e2e
def test_while_loading_connections_are_refused_not_queued(tiny_base_path):
    # Both ports are bound before the model loads but only listened on after: a client of a loading
    # server must get "connection refused" at once, never a request stuck in the listen backlog.
    port, grpc_port = free_port(), free_port()
    server = spawn(model_server_command("tiny", tiny_base_path, port, LOOPBACK, real_if_installed=False,
                                        grpc_port=grpc_port), port)
    outcomes, grpc_open_before_load, grpc_probes = [], 0, 0
    try:
        deadline = time.monotonic() + 60
        while not outcomes or outcomes[-1] != "AVAILABLE":
            assert server.alive() and time.monotonic() < deadline, server.log()
            if not port_closed(grpc_port):
                # The server opens gRPC only after the load it logs, and then REST a moment later, so
                # the REST answer is no clock for gRPC: the log, read after the probe, is.
                grpc_open_before_load += LOADED_LINE not in server.log()
            grpc_probes += 1
            try:
                outcomes.append(model_state(requests.get(f"{server.url}/v1/models/tiny", timeout=2))[0])
            except requests.ConnectionError:
                outcomes.append("refused")
            except requests.Timeout:
                outcomes.append("timed out")
            time.sleep(0.05)
    finally:
        server.stop()
    assert "timed out" not in outcomes and outcomes[0] == "refused", outcomes
    assert grpc_probes > 1 and grpc_open_before_load == 0, "the gRPC port accepted connections before the model was loaded"


@pytest.mark.e2e
def test_busy_grpc_port_is_one_line_and_exit_1(tiny_base_path):
    rest_port = free_port()

    def command(port: int) -> list[str]:
        return model_server_command("tiny", tiny_base_path, rest_port, LOOPBACK, real_if_installed=False,
                                    grpc_port=port)

    code, log, port = run_on_held_port(command, EXIT_TIMEOUT)
    # test that the gRPC port is checked before the model loads too, in TF Serving's words
    assert code == 1, log
    failure = only_line_starting(log, "Failed to start server. Error: ")
    assert "Failed to BuildAndStart gRPC server" in failure and f":{port}" in failure
    assert "Traceback" not in log
    assert "Loading servable" not in log, log
