"""model_server/server.py: the wiring (config -> repository + version manager -> runner -> REST), in-process.

``ModelServer`` is started without a REST port (``--rest_api_port=0``, the flag's default) so the
tests see what start-up loaded, how calls are run and what a config reload changes, with no
socket; one e2e case binds a real port to show the REST server is wired to the same repository.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from model_server.config import ConfigError, ServerConfig, parse_model_config_text
from model_server.errors import Unknown
from model_server.server import ModelServer
from scripts.processes import LOOPBACK, free_port
from tests.model_server.conftest import TINY_INPUT, model_config_text

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def running(**flags) -> Iterator[ModelServer]:
    """A started ModelServer with these flags (no load retries, no gRPC port), shut down afterwards."""
    server = ModelServer(ServerConfig(port=0, max_num_load_retries=0, **flags))
    try:
        server.start()
        yield server
    finally:
        server.request_stop()
        server.shutdown()


def available(server: ModelServer) -> dict[str, set[int]]:
    return {name: {v for v, state in versions.items() if state == "AVAILABLE"}
            for name, versions in server.repository.snapshot().items()}


def test_start_loads_the_latest_version_and_runs_calls_on_it(model_paths, caplog):
    caplog.set_level(logging.INFO, logger="model_server")
    with running(model_name="tiny", model_base_path=str(model_paths["tiny"])) as server:
        assert available(server) == {"tiny": {2}}  # TF Serving's default policy: latest 1
        images = np.random.default_rng(0).random((2, *TINY_INPUT, 3), dtype=np.float32)
        with server.repository.acquire("tiny") as handle:
            through_server = server._submit(handle, "serving_default", {"image": images}).result(30)
            direct = handle.servable.run("serving_default", {"image": images})
        np.testing.assert_allclose(through_server["probabilities"], direct["probabilities"])
    assert "HTTP/REST API disabled (--rest_api_port=0)" in caplog.text
    assert "Model server stopped." in caplog.text


def test_load_latency_is_recorded_per_version_path(model_paths):
    with running(model_name="tiny", model_base_path=str(model_paths["tiny"])) as server:
        page = server.metrics.render()[0].decode()
    assert f'load_latency_by_stage_count{{model_path="{model_paths["tiny"] / "2"}",stage="total"}} 1.0' in page


def test_a_model_that_never_loads_fails_start_up(tmp_path):
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    # ServerCore::WaitUntilModelsAvailable's message, with the version's error
    with pytest.raises(ConfigError, match=r"1 model\(s\) did not become available: \{\{\{name: broken version: 1\} "
                                          r"due to error: DATA_LOSS: Can't parse .* as binary proto\}, \}"):
        with running(model_name="broken", model_base_path=str(tmp_path / "broken")):
            pass


def test_config_file_reload_adds_and_removes_models(model_paths, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"tiny": model_paths["tiny"]}))
    with running(model_config_file=str(config), model_config_file_poll_wait_seconds=1) as server:
        assert set(available(server)) == {"tiny"}
        config.write_text(model_config_text({"half_plus_two": model_paths["half_plus_two"]}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (available(server).get("half_plus_two")
                                                   and not available(server).get("tiny")):
            time.sleep(0.1)
        assert available(server).get("half_plus_two") == {1} and not available(server).get("tiny")


def test_a_reload_whose_deadline_has_passed_does_not_wait_for_the_load(model_paths, tmp_path):
    # A gRPC HandleReloadConfigRequest with an expired deadline hands over 0 s: the reload is still
    # applied, but the answer must say the model is not available yet instead of waiting for it.
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"tiny": model_paths["tiny"]}))
    with running(model_config_file=str(config)) as server:
        models = parse_model_config_text(str(_write(tmp_path / "new.config", model_config_text(
            {"tiny": model_paths["tiny"], "half_plus_two": model_paths["half_plus_two"]}))))
        with pytest.raises(Unknown, match="half_plus_two"):
            server.reload_config(models, timeout_s=0.0)
        server.reload_config(models, timeout_s=None)  # no deadline: waits until it is loaded
        assert available(server).get("half_plus_two") == {1}


def _write(path, text: str):
    path.write_text(text)
    return path


def test_batching_runs_calls_through_the_scheduler(model_paths, tmp_path):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\n")
    with running(model_name="half_plus_two", model_base_path=str(model_paths["half_plus_two"]),
                 enable_batching=True, batching_parameters_file=str(params)) as server:
        with server.repository.acquire("half_plus_two") as handle:
            result = server._submit(handle, "serving_default", {"x": np.array([1.0, 6.0], np.float32)}).result(30)
        page = server.metrics.render()[0].decode()
    np.testing.assert_allclose(result["y"], [2.5, 5.0])
    assert ":tensorflow:serving:batching_session:processed_batch_size_count 1.0" in page


@pytest.mark.e2e
def test_rest_port_serves_the_same_repository_and_closes_on_shutdown(model_paths):
    port = free_port()
    with running(model_name="tiny", model_base_path=str(model_paths["tiny"]), rest_api_port=port,
                 rest_api_host=LOOPBACK) as server:
        status = requests.get(f"http://{LOOPBACK}:{port}/v1/models/tiny", timeout=10).json()
        assert status["model_version_status"] == server.repository.version_status("tiny")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{LOOPBACK}:{port}/v1/models/tiny", timeout=2)
