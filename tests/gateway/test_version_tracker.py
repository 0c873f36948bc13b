"""Which version the gateway calls: hot-swap retry, labels, the status cache and concurrent resolves."""

from __future__ import annotations

import threading

import numpy as np

from flask_server.backend import ModelServerClient
from flask_server.model_config import ModelSpec
from flask_server.version_tracker import VersionTracker
from tests.gateway.conftest import PREDICTIONS, StubReply, closed_port_url, routed, status_reply

SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(2, 2))


def test_version_tracker_retries_once_after_a_hot_swap(upstream):
    """Version 1 is unloaded between the status and the predict call: refresh, call version 2."""
    state = {"version": 1}

    def reply(method, path):
        if path.endswith(":predict"):
            if "/versions/2:" in path:
                return StubReply(body=PREDICTIONS)
            state["version"] = 2
            return StubReply(status=404, body=b'{"error": "Servable not found for request: Specific(m, 1)"}')
        return StubReply(body=status_reply(state["version"]))
    upstream.reply = reply
    client = ModelServerClient(upstream.url)
    tracker = VersionTracker(client, "m")
    encoded = client.encode(SPEC, np.zeros((1, 2, 2, 3), np.uint8))
    scores, version = tracker.predict(lambda v: client.predict(SPEC, encoded, v))
    assert version == 2 and scores.shape == (1, 2)
    assert [p for _, p, _ in upstream.requests if p.endswith(":predict")] == [
        "/v1/models/m/versions/1:predict", "/v1/models/m/versions/2:predict"]


def test_version_tracker_resolves_labels_through_metadata(upstream):
    upstream.reply = routed(metadata=b'{"model_spec": {"name": "m", "version": "4"}, "metadata": {}}')
    tracker = VersionTracker(ModelServerClient(upstream.url), "m", label="stable")
    assert tracker.current() == 4
    assert upstream.requests[-1][1] == "/v1/models/m/labels/stable/metadata"


def test_version_tracker_caches_status_for_its_ttl(upstream):
    now = [0.0]
    upstream.reply = routed()
    tracker = VersionTracker(ModelServerClient(upstream.url), "m", ttl=1.0, clock=lambda: now[0])
    tracker.current()
    tracker.current()
    now[0] = 1.5
    tracker.current()
    assert len(upstream.requests) == 2


class ScriptedTracker(VersionTracker):
    """A tracker whose ``_resolve`` returns scripted versions, each after an optional gate opens, so a
    test decides exactly when each of two concurrent resolves answers."""

    def __init__(self, script: list[tuple[int, threading.Event | None]]) -> None:
        super().__init__(ModelServerClient(closed_port_url()), "m", clock=lambda: 0.0)
        self.script = script
        self.entered = [threading.Event() for _ in script]
        self.calls = 0

    def _resolve(self) -> int:
        index, self.calls = self.calls, self.calls + 1
        version, gate = self.script[index]
        self.entered[index].set()
        if gate is not None:
            assert gate.wait(10), "the test never opened the gate"
        return version


def test_a_slow_resolve_never_replaces_a_newer_one():
    """During a hot swap: thread A reads the status (v1), then B reads it (v2) and stores v2 first;
    A's late v1 must not overwrite it, and A itself goes on with v2."""
    release_a = threading.Event()
    tracker = ScriptedTracker([(1, release_a), (2, None)])
    results: dict[str, int] = {}
    thread_a = threading.Thread(target=lambda: results.update(a=tracker.current()))
    thread_a.start()
    assert tracker.entered[0].wait(10)
    results["b"] = tracker.current()  # starts after A, answers before it
    release_a.set()
    thread_a.join(10)
    assert results == {"a": 2, "b": 2}
    assert tracker.current() == 2 and tracker.calls == 2  # cached, not resolved again


def test_a_later_resolve_replaces_an_earlier_one():
    """The ordinary order: the resolve that started last is stored, even with a lower version (a
    rollback that unloaded v2 must be followed)."""
    release_a = threading.Event()
    tracker = ScriptedTracker([(2, release_a), (1, None)])
    thread_a = threading.Thread(target=tracker.current)
    thread_a.start()
    assert tracker.entered[0].wait(10)
    assert tracker.current() == 1
    release_a.set()
    thread_a.join(10)
    assert tracker.current() == 1
