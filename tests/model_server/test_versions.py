"""Version selection, the repository and the availability-preserving manager, with a fake loader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from model_server.config import ModelConfig, VersionPolicy
from model_server.errors import DataLoss, InvalidArgument, NotFound
from model_server.repository import ModelRepository
from model_server.versions import VersionManager, version_dirs, wanted_versions


def make_version(base: Path, name: str, complete: bool = True) -> None:
    (base / name).mkdir(parents=True)
    if complete:
        (base / name / "saved_model.pb").write_bytes(b"")


@pytest.fixture
def base(tmp_path):
    for name in ("1", "2", "10", "007"):
        make_version(tmp_path, name)
    make_version(tmp_path, ".export-11-x")
    make_version(tmp_path, "tmp")
    make_version(tmp_path, "12", complete=False)
    (tmp_path / "13").write_text("a file, not a directory")
    return tmp_path


def test_only_complete_numeric_directories_are_versions(base):
    assert sorted(version_dirs(base)) == [1, 2, 7, 10]


@pytest.mark.parametrize("policy, expected", [
    (VersionPolicy(), {10}),
    (VersionPolicy("latest", num_versions=2), {7, 10}),
    (VersionPolicy("all"), {1, 2, 7, 10}),
    (VersionPolicy("specific", versions=(2, 3)), {2}),
])
def test_policies(base, policy, expected):
    assert wanted_versions(base, policy) == expected


def test_missing_base_path_raises(tmp_path):
    with pytest.raises(OSError):
        wanted_versions(tmp_path / "missing", VersionPolicy())


# -- repository ---------------------------------------------------------------------------------

def test_repository_lookup_messages():
    repo = ModelRepository()
    repo.set_labels("m", {"stable": 1})
    repo.set_state("m", 1, "AVAILABLE", servable="one")
    repo.set_state("m", 2, "LOADING")
    with repo.acquire("m") as handle:
        assert (handle.version, handle.servable) == (1, "one")
    with repo.acquire("m", label="stable") as handle:
        assert handle.version == 1
    with pytest.raises(NotFound, match=r"Servable not found for request: Latest\(x\)"):
        repo.acquire("x")
    with pytest.raises(NotFound, match=r"Specific\(m, 2\)"):
        repo.acquire("m", version=2)
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
        repo.acquire("m", label="beta")
    assert [s["version"] for s in repo.version_status("m")] == ["2", "1"]
    with pytest.raises(NotFound, match="Could not find version 5 of model m"):
        repo.version_status("m", 5)


# -- manager --------------------------------------------------------------------------------------

class FakeLoader:
    """Loads instantly unless a version is listed in ``broken`` or held back by ``gates``."""

    def __init__(self):
        self.broken: set[int] = set()
        self.gates: dict[int, threading.Event] = {}
        self.attempts: dict[int, int] = {}
        self.unloaded: list[str] = []

    def load(self, name, version, path):
        self.attempts[version] = self.attempts.get(version, 0) + 1
        if version in self.gates:
            self.gates[version].wait(10)
        if version in self.broken:
            raise DataLoss(f"Can't parse {path}/saved_model.pb as binary proto")
        return f"{name}-{version}"

    def unload(self, servable):
        self.unloaded.append(servable)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def setup(tmp_path):
    repo, loader = ModelRepository(), FakeLoader()
    manager = VersionManager(repo, loader.load, loader.unload, poll_wait_seconds=0, max_load_retries=2,
                             load_retry_interval_s=0.01, unload_wait_s=5)
    make_version(tmp_path, "1")
    manager.set_models([ModelConfig("m", str(tmp_path))])
    wait_for(lambda: repo.snapshot()["m"] == {1: "AVAILABLE"})
    yield repo, loader, manager, tmp_path
    manager.stop()


def test_new_version_loads_before_the_old_one_unloads(setup):
    repo, loader, manager, base = setup
    loader.gates[2] = threading.Event()
    make_version(base, "2")
    manager.poll_once()
    wait_for(lambda: repo.snapshot()["m"].get(2) == "LOADING")
    with repo.acquire("m") as handle:  # the old one still serves while the new one loads
        assert handle.version == 1
    loader.gates[2].set()
    wait_for(lambda: repo.snapshot()["m"] == {1: "END", 2: "AVAILABLE"})
    assert loader.unloaded == ["m-1"]


def test_unload_waits_for_in_flight_requests(setup):
    repo, loader, manager, base = setup
    handle = repo.acquire("m")
    make_version(base, "2")
    manager.poll_once()
    wait_for(lambda: repo.snapshot()["m"] == {1: "UNLOADING", 2: "AVAILABLE"})
    time.sleep(0.1)
    assert loader.unloaded == []
    handle.release()
    wait_for(lambda: loader.unloaded == ["m-1"])


def test_failed_version_is_retried_then_reported_and_never_replaces_the_served_one(setup):
    repo, loader, manager, base = setup
    loader.broken.add(2)
    make_version(base, "2")
    manager.poll_once()
    wait_for(lambda: repo.snapshot()["m"].get(2) == "END")
    assert loader.attempts[2] == 3  # first try + max_load_retries
    status = repo.version_status("m", 2)[0]["status"]
    assert status["error_code"] == "DATA_LOSS" and "Can't parse" in status["error_message"]
    with repo.acquire("m") as handle:
        assert handle.version == 1
    manager.poll_once()
    time.sleep(0.05)
    assert loader.attempts[2] == 3  # not retried forever


def test_removed_version_directory_is_unloaded(setup):
    repo, loader, manager, base = setup
    manager.set_models([ModelConfig("m", str(base), version_policy=VersionPolicy("all"))])
    make_version(base, "2")
    manager.poll_once()
    wait_for(lambda: repo.snapshot()["m"] == {1: "AVAILABLE", 2: "AVAILABLE"})
    (base / "2" / "saved_model.pb").unlink()
    (base / "2").rmdir()
    manager.poll_once()
    wait_for(lambda: repo.snapshot()["m"] == {1: "AVAILABLE", 2: "END"})


def test_removed_model_is_unloaded(setup):
    repo, loader, manager, base = setup
    manager.set_models([])
    wait_for(lambda: repo.snapshot()["m"] == {1: "END"})
