"""model_server/repository.py: the table of models, versions, states and labels (pure Python).

Servables here are plain objects: the repository only stores and hands them out, it never calls them.
"""

from __future__ import annotations

import threading
import time

import pytest

from model_server.errors import InvalidArgument, NotFound
from model_server.repository import (STATE_AVAILABLE, STATE_END, STATE_LOADING, STATE_START, STATE_UNLOADING,
                                     ModelRepository)


def repository_with(*versions: tuple[int, str], name: str = "m", labels: dict[str, int] | None = None
                    ) -> ModelRepository:
    """A repository where ``name`` has each (version, state), servable ``f"{name}:{version}"``."""
    repository = ModelRepository()
    for version, state in versions:
        repository.set_state(name, version, state, servable=f"{name}:{version}")
    if labels:
        repository.set_labels(name, labels)
    return repository


# -- acquire -------------------------------------------------------------------------------------

def test_latest_is_the_highest_available_version():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_AVAILABLE), (3, STATE_LOADING))
    with repository.acquire("m") as handle:
        assert (handle.name, handle.version, handle.servable) == ("m", 2, "m:2")


def test_specific_version_and_label():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_AVAILABLE), labels={"stable": 1})
    with repository.acquire("m", version=1) as handle:
        assert handle.servable == "m:1"
    with repository.acquire("m", label="stable") as handle:
        assert handle.version == 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"name": "nope"}, NotFound, "Servable not found for request: Latest(nope)"),
    ({"name": "m", "version": 3}, NotFound, "Servable not found for request: Specific(m, 3)"),
    ({"name": "m", "version": 2}, NotFound, "Servable not found for request: Specific(m, 2)"),  # LOADING
    ({"name": "m", "label": "canary"}, InvalidArgument, "Unrecognized servable version label: canary"),
    ({"name": "nope", "label": "stable"}, InvalidArgument, "Unrecognized servable version label: stable"),
])
def test_lookup_errors_have_tf_servings_messages(kwargs, error, message):
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_LOADING), labels={"stable": 1})
    with pytest.raises(error) as caught:
        repository.acquire(kwargs.pop("name"), **kwargs)
    assert caught.value.message == message


def test_model_without_available_versions_has_no_latest():
    repository = repository_with((1, STATE_LOADING))
    with pytest.raises(NotFound, match=r"Latest\(m\)"):
        repository.acquire("m")


def test_label_pointing_at_an_unavailable_version_is_not_found():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_LOADING), labels={"canary": 2})
    with pytest.raises(NotFound, match=r"Specific\(m, 2\)"):
        repository.acquire("m", label="canary")


def test_release_counts_down_once_however_often_it_is_called():
    repository = repository_with((1, STATE_AVAILABLE))
    first, second = repository.acquire("m"), repository.acquire("m")
    assert repository.in_flight() == 2
    first.release()
    first.release()
    assert repository.in_flight() == 1
    with second:
        pass
    assert repository.in_flight() == 0


def test_release_on_error_inside_the_with_block():
    repository = repository_with((1, STATE_AVAILABLE))
    with pytest.raises(RuntimeError), repository.acquire("m"):
        raise RuntimeError("the model call failed")
    assert repository.in_flight() == 0


def test_labels_are_replaced_not_merged():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_AVAILABLE), labels={"stable": 1, "canary": 2})
    repository.set_labels("m", {"stable": 2})
    assert repository.acquire("m", label="stable").version == 2
    with pytest.raises(InvalidArgument):
        repository.acquire("m", label="canary")


# -- states and status ---------------------------------------------------------------------------

def test_version_status_highest_first_with_errors():
    repository = ModelRepository()
    repository.ensure_model("m")
    with pytest.raises(NotFound, match="Could not find any versions of model m"):
        repository.version_status("m")
    repository.set_state("m", 1, STATE_AVAILABLE, servable="m:1")
    repository.set_state("m", 3, STATE_END, error=("NOT_FOUND", "no saved_model.pb"))
    repository.set_state("m", 2, STATE_LOADING)
    assert repository.version_status("m") == [
        {"version": "3", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "no saved_model.pb"}},
        {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]
    assert [s["version"] for s in repository.version_status("m", 2)] == ["2"]
    with pytest.raises(NotFound, match="Could not find version 9 of model m"):
        repository.version_status("m", 9)
    with pytest.raises(NotFound, match="Could not find any versions of model other"):
        repository.version_status("other")


def test_end_drops_the_servable_and_a_later_success_clears_the_error():
    repository = repository_with((1, STATE_AVAILABLE))
    repository.set_state("m", 1, STATE_END, error=("UNKNOWN", "boom"))
    assert repository.state_of("m", 1) == STATE_END
    repository.set_state("m", 1, STATE_LOADING, servable="m:1 again")
    repository.set_state("m", 1, STATE_AVAILABLE)
    assert repository.version_status("m", 1)[0]["status"] == {"error_code": "OK", "error_message": ""}
    assert repository.acquire("m", 1).servable == "m:1 again"  # kept from LOADING


def test_state_of_unknown_version_is_none_and_snapshot_lists_everything():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_START))
    repository.ensure_model("empty")
    assert repository.state_of("m", 7) is None and repository.state_of("nope", 1) is None
    assert repository.snapshot() == {"m": {1: STATE_AVAILABLE, 2: STATE_START}, "empty": {}}


# -- unloading -----------------------------------------------------------------------------------

def test_unload_waits_for_in_flight_requests_and_stops_handing_the_version_out():
    repository = repository_with((1, STATE_AVAILABLE), (2, STATE_AVAILABLE))
    held = repository.acquire("m", 1)
    taken = {}

    def unload():
        taken["servable"] = repository.take_for_unload("m", 1, timeout=30)
        taken["at"] = time.monotonic()

    unloader = threading.Thread(target=unload)
    unloader.start()
    deadline = time.monotonic() + 10
    while repository.state_of("m", 1) != STATE_UNLOADING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert repository.state_of("m", 1) == STATE_UNLOADING
    with pytest.raises(NotFound):
        repository.acquire("m", 1)
    assert repository.acquire("m").version == 2  # latest skips the unloading version
    assert unloader.is_alive()  # still waiting for ``held``
    released_at = time.monotonic()
    held.release()
    unloader.join(10)
    assert taken["servable"] == "m:1" and taken["at"] >= released_at


def test_unload_gives_up_waiting_after_its_timeout():
    repository = repository_with((1, STATE_AVAILABLE))
    held = repository.acquire("m")
    assert repository.take_for_unload("m", 1, timeout=0.05) == "m:1"
    assert repository.in_flight() == 1
    held.release()
