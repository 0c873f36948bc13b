"""What is being served: model name -> versions -> state and loaded servable, plus version labels.

The repository is the one shared, locked table between request threads (which ``acquire`` a
version for the duration of a call) and the version manager (which loads and unloads). A version
is handed out only while AVAILABLE; unloading waits until its in-flight count drops to zero, so a
request never loses its model mid-call. Lookup errors reproduce TF Serving's messages.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from model_server.errors import InvalidArgument, NotFound

# ServableState::ManagerState names as the status API prints them.
STATE_START = "START"
STATE_LOADING = "LOADING"
STATE_AVAILABLE = "AVAILABLE"
STATE_UNLOADING = "UNLOADING"
STATE_END = "END"
OK = "OK"


@dataclass
class VersionRecord:
    """One version of one model as the status API reports it."""

    version: int
    state: str = STATE_START
    error_code: str = OK
    error_message: str = ""
    servable: Any = None
    in_flight: int = 0


@dataclass
class _Model:
    name: str
    labels: dict[str, int] = field(default_factory=dict)
    versions: dict[int, VersionRecord] = field(default_factory=dict)


class ServableHandle:
    """A version held for one request; ``release`` (or leaving the ``with`` block) lets it unload."""

    def __init__(self, repository: ModelRepository, name: str, record: VersionRecord):
        self._repository = repository
        self.name = name
        self.version = record.version
        self.servable = record.servable
        self._record = record
        self._released = False

    def release(self) -> None:
        """Give the version back; idempotent."""
        if not self._released:
            self._released = True
            self._repository._release(self._record)

    def __enter__(self) -> ServableHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


class ModelRepository:
    """Thread-safe table of models, versions and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}

    # -- written by the version manager ------------------------------------------------------

    def ensure_model(self, name: str) -> None:
        """Register ``name`` (no versions yet)."""
        with self._lock:
            self._models.setdefault(name, _Model(name))

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Replace the version labels of ``name``."""
        with self._lock:
            self._models.setdefault(name, _Model(name)).labels = dict(labels)

    def set_state(self, name: str, version: int, state: str, servable: Any = None,
                  error: tuple[str, str] | None = None) -> None:
        """Record a state transition; ``servable`` is kept only while LOADING/AVAILABLE/UNLOADING."""
        with self._changed:
            model = self._models.setdefault(name, _Model(name))
            record = model.versions.setdefault(version, VersionRecord(version))
            record.state = state
            record.error_code, record.error_message = error or (OK, "")
            if servable is not None:
                record.servable = servable
            if state == STATE_END:
                record.servable = None
            self._changed.notify_all()

    def state_of(self, name: str, version: int) -> str | None:
        """The state of one version, or None if it was never seen."""
        with self._lock:
            record = self._models.get(name, _Model(name)).versions.get(version)
            return record.state if record else None

    def take_for_unload(self, name: str, version: int, timeout: float) -> Any:
        """Mark a version UNLOADING, wait (up to ``timeout`` s) for its requests, return its servable."""
        deadline = time.monotonic() + timeout
        with self._changed:
            record = self._models[name].versions[version]
            record.state = STATE_UNLOADING
            while record.in_flight and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return record.servable

    # -- read by request threads --------------------------------------------------------------

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> ServableHandle:
        """Hold the requested AVAILABLE version (latest if neither ``version`` nor ``label``).

        Raises InvalidArgument for an unknown label and NotFound when no such version is served,
        with TF Serving's messages.
        """
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                if model is None or label not in model.labels:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            if version is None:
                record = self._latest_available(model)
                if record is None:
                    raise NotFound(f"Servable not found for request: Latest({name})")
            else:
                record = model.versions.get(version) if model else None
                if record is None or record.state != STATE_AVAILABLE:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            record.in_flight += 1
            return ServableHandle(self, name, record)

    def _release(self, record: VersionRecord) -> None:
        with self._changed:
            record.in_flight -= 1
            if record.in_flight == 0:
                self._changed.notify_all()

    @staticmethod
    def _latest_available(model: _Model | None) -> VersionRecord | None:
        if model is None:
            return None
        available = [r for r in model.versions.values() if r.state == STATE_AVAILABLE]
        return max(available, key=lambda r: r.version) if available else None

    def version_status(self, name: str, version: int | None = None) -> list[dict]:
        """``model_version_status`` entries, highest version first, as GetModelStatus returns them.

        Raises NotFound with get_model_status_impl.cc's messages.
        """
        with self._lock:
            model = self._models.get(name)
            records = dict(model.versions) if model else {}
        if version is not None:
            if version not in records:
                raise NotFound(f"Could not find version {version} of model {name}")
            records = {version: records[version]}
        elif not records:
            raise NotFound(f"Could not find any versions of model {name}")
        return [{"version": str(v), "state": records[v].state,
                 "status": {"error_code": records[v].error_code, "error_message": records[v].error_message}}
                for v in sorted(records, reverse=True)]

    def snapshot(self) -> dict[str, dict[int, str]]:
        """``{model: {version: state}}`` for logs, tests and readiness checks."""
        with self._lock:
            return {name: {v: r.state for v, r in model.versions.items()} for name, model in self._models.items()}

    def in_flight(self) -> int:
        """Requests currently holding any version."""
        with self._lock:
            return sum(r.in_flight for m in self._models.values() for r in m.versions.values())
