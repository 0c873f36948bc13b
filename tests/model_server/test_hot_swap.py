"""Version polling against a real server: swap under load, broken and half-written versions, removal.

One server (``--file_system_poll_wait_seconds=1``, no load retries) watches a base path the tests
change; the tests run in order and each starts from the previous one's state.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import requests

from tests.model_server.conftest import TINY_INPUT
from tests.support.tiny_models import export_tiny_classifier

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SWAP_BUDGET_S = 15.0  # poll interval + load + warm-up, with room for a slow CI machine


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("swap") / "tiny"
    export_tiny_classifier(path, 1, input_size=TINY_INPUT, seed=0)
    return path


@pytest.fixture(scope="module")
def server(base_path, model_server_factory):
    args = ["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0", "--rest_api_host=127.0.0.1"]
    with model_server_factory(model_name="tiny", model_base_path=base_path, extra_args=args) as process:
        yield process


def states(server) -> dict[str, tuple[str, str]]:
    body = requests.get(server.url + "/v1/models/tiny", timeout=5).json()
    return {s["version"]: (s["state"], s["status"]["error_code"]) for s in body["model_version_status"]}


def wait_for_states(server, predicate, timeout: float = SWAP_BUDGET_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = states(server)
        if predicate(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"states never matched: {states(server)}\n{server.log()[-3000:]}")


IMAGE = np.random.default_rng(1).random((1, *TINY_INPUT, 3), dtype=np.float32).tolist()


def test_swap_under_continuous_load_drops_nothing(server, base_path):
    failures, outputs, stop = [], [], threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(server.url + "/v1/models/tiny:predict", json={"instances": IMAGE},
                                        timeout=30)
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    outputs.append(tuple(np.round(response.json()["predictions"][0], 6)))

    caller = threading.Thread(target=client)
    caller.start()
    try:
        time.sleep(0.3)
        export_tiny_classifier(base_path, 2, input_size=TINY_INPUT, seed=1)
        exported_at = time.monotonic()
        wait_for_states(server, lambda s: s.get("2") == ("AVAILABLE", "OK") and s.get("1") == ("END", "OK"))
        assert time.monotonic() - exported_at < SWAP_BUDGET_S
        time.sleep(0.3)
    finally:
        stop.set()
        caller.join(30)
    assert failures == []
    assert len(set(outputs)) == 2, "both the old and the new version answered during the swap"
    assert outputs[-1] != outputs[0]


def test_broken_version_is_reported_and_old_keeps_serving(server, base_path):
    broken = base_path / "3"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a protobuf \xff\xff\xff")
    current = wait_for_states(server, lambda s: s.get("3", ("",))[0] == "END")
    assert current["3"] == ("END", "DATA_LOSS")
    assert current["2"] == ("AVAILABLE", "OK")
    status = requests.get(server.url + "/v1/models/tiny/versions/3", timeout=5).json()["model_version_status"][0]
    assert "Can't parse" in status["status"]["error_message"]
    response = requests.post(server.url + "/v1/models/tiny:predict", json={"instances": IMAGE}, timeout=10)
    assert response.status_code == 200


def test_half_written_and_staging_dirs_are_ignored(server, base_path):
    (base_path / "4" / "variables").mkdir(parents=True)  # being copied: no saved_model.pb yet
    staging = base_path / ".export-5-abc"
    shutil.copytree(base_path / "2", staging)
    time.sleep(2.5)  # two poll intervals
    current = states(server)
    assert "4" not in current and "5" not in current
    assert current["2"] == ("AVAILABLE", "OK")


def test_removed_version_is_unloaded_after_the_previous_one_is_back(server, base_path):
    for name in ("3", "4", ".export-5-abc", "2"):
        shutil.rmtree(base_path / name)
    current = wait_for_states(server, lambda s: s.get("1") == ("AVAILABLE", "OK") and s.get("2") == ("END", "OK"))
    assert "3" not in current or current["3"][0] == "END"
    response = requests.post(server.url + "/v1/models/tiny/versions/2:predict", json={"instances": IMAGE}, timeout=10)
    assert response.status_code == 404
