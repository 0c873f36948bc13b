"""A REST port another process listens on: one TF Serving-style line and exit 1, before any model loads."""

from __future__ import annotations

import pytest

from scripts.processes import LOOPBACK, model_server_command
from tests.support.processes import only_line_starting, run_on_held_port
from tests.support.tiny_models import export_tiny_classifier

EXIT_TIMEOUT = 30.0  # bounds a hang; a busy port is reported well before TensorFlow is imported


@pytest.fixture(scope="module")
def tiny_base_path(tmp_path_factory):
    base_path = tmp_path_factory.mktemp("busy") / "tiny"
    export_tiny_classifier(base_path, 1)
    return base_path


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
    assert "Loading" not in log and "AVAILABLE" not in log and "TensorFlow threads" not in log, log
