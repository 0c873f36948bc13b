"""Which versions to serve, and the background manager that loads, swaps and unloads them.

``wanted_versions`` mirrors TF Serving's FileSystemStoragePathSource: only children whose names
are integers count as versions (hidden ``.export-*`` staging dirs and anything else are skipped),
then the model's version policy picks among them. The ``VersionManager`` follows the
AvailabilityPreservingPolicy: a new version is loaded (and warmed up) in the background while the
old one keeps serving; an un-aspired version is unloaded only once an aspired one is AVAILABLE
(or none is aspired at all), and only after its in-flight requests have finished. Failed loads
are retried ``max_num_load_retries`` times, then reported in the status as END with the error,
and not retried again while the version stays aspired (as the real server does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_server.config import ModelConfig, VersionPolicy
from model_server.errors import ServingError
from model_server.repository import (STATE_AVAILABLE, STATE_END, STATE_LOADING, STATE_UNLOADING,
                                     ModelRepository)
from serving_contract.versions import version_dirs

log = logging.getLogger(__name__)

_SETTLE_CHECK_INTERVAL_S = 0.05

LoadFn = Callable[[str, int, Path], Any]
UnloadFn = Callable[[Any], None]


def select_versions(available: Iterable[int], policy: VersionPolicy) -> set[int]:
    """Apply a version policy to the versions present on disk."""
    present = set(available)
    if policy.kind == "all":
        return present
    if policy.kind == "specific":
        return present & set(policy.versions)
    return set(sorted(present, reverse=True)[:max(policy.num_versions, 1)])


def wanted_versions(base_path: str | Path, policy: VersionPolicy) -> set[int]:
    """The versions under ``base_path`` that ``policy`` says to serve. Raises OSError if unreadable."""
    return select_versions(version_dirs(base_path), policy)


def error_status_of(exc: BaseException) -> tuple[str, str]:
    """(error_code, error_message) for the status API, from a load failure."""
    if isinstance(exc, ServingError):
        return exc.code, exc.message
    return "UNKNOWN", f"{type(exc).__name__}: {exc}"


@dataclass
class _Tracked:
    config: ModelConfig
    aspired: set[int] = field(default_factory=set)
    paths: dict[int, Path] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    unloading: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    polled: bool = False


class VersionManager:
    """Keeps the repository in line with the model configs and what is on disk."""

    def __init__(self, repository: ModelRepository, load: LoadFn, unload: UnloadFn, *,
                 poll_wait_seconds: int = 1, max_load_retries: int = 5, load_retry_interval_s: float = 60.0,
                 unload_wait_s: float = 60.0):
        self._repository = repository
        self._load = load
        self._unload = unload
        self._poll_wait_seconds = poll_wait_seconds
        self._max_load_retries = max_load_retries
        self._load_retry_interval_s = load_retry_interval_s
        self._unload_wait_s = unload_wait_s
        self._lock = threading.RLock()
        self._models: dict[str, _Tracked] = {}
        self._stopping = threading.Event()
        self._starting = threading.Event()  # set until start-up's wait for the first loads is over
        self._starting.set()
        self._poller: threading.Thread | None = None

    # -- configuration ---------------------------------------------------------------------

    def set_models(self, configs: list[ModelConfig]) -> None:
        """Serve exactly ``configs``: add new models, update policies and labels, retire removed ones."""
        with self._lock:
            wanted = {c.name: c for c in configs}
            for name, tracked in list(self._models.items()):
                if name not in wanted:
                    log.info("Model %s removed from the config; unloading its versions", name)
                    self._reconcile(name, set(), {})
                    del self._models[name]
            for name, config in wanted.items():
                tracked = self._models.get(name)
                if tracked is None:
                    self._models[name] = _Tracked(config)
                    self._repository.ensure_model(name)
                else:
                    tracked.config = config
                self._repository.set_labels(name, config.version_labels)
        self.poll_once()

    # -- polling ---------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Look at every model's base path once and start the loads/unloads it calls for."""
        with self._lock:
            names = list(self._models)
        for name in names:
            with self._lock:
                tracked = self._models.get(name)
                if tracked is None:
                    continue
                base_path = tracked.config.base_path
                try:
                    paths = version_dirs(base_path)
                except OSError as exc:
                    # Like the real source: report and keep serving what is loaded.
                    log.warning("File system access error for servable %s: Could not find base path %s (%s)",
                                name, base_path, exc.strerror or exc)
                    continue
                aspired = select_versions(paths, tracked.config.version_policy)
                if not aspired and not tracked.polled:
                    log.warning("No versions of servable %s found under base path %s.", name, base_path)
                tracked.polled = True
                self._reconcile(name, aspired, paths)

    def start(self) -> None:
        """Start the periodic poller (a single poll already happened in ``set_models``)."""
        if self._poll_wait_seconds <= 0:
            return  # real semantics: polled exactly once
        self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._poller.start()

    def request_stop(self) -> None:
        """Stop polling, retrying and start-up waits soon (safe from a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop polling and retrying; in-progress loads finish in their daemon threads."""
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # a poller that dies silently would freeze the served versions
                log.exception("Version poll failed")

    # -- the availability-preserving policy --------------------------------------------------

    def _reconcile(self, name: str, aspired: set[int], paths: dict[int, Path]) -> None:
        tracked = self._models[name]
        tracked.aspired = set(aspired)
        tracked.paths = dict(paths)
        tracked.failed &= aspired  # a version that disappears and comes back gets a fresh try
        states = self._repository.snapshot().get(name, {})
        busy = tracked.loading | tracked.unloading
        for version in sorted(aspired, reverse=True):
            if version in busy or version in tracked.failed:
                continue
            if states.get(version) in (STATE_LOADING, STATE_AVAILABLE, STATE_UNLOADING):
                continue
            self._start_load(name, version, paths[version])
        serving = {v for v, s in states.items() if s == STATE_AVAILABLE and v not in tracked.unloading}
        unaspired_serving = sorted(serving - aspired)
        aspired_serving = serving & aspired
        while unaspired_serving and (not aspired or aspired_serving or len(unaspired_serving) > 1):
            self._start_unload(name, unaspired_serving.pop(0))

    def _start_load(self, name: str, version: int, path: Path) -> None:
        self._models[name].loading.add(version)
        self._repository.set_state(name, version, STATE_LOADING)
        threading.Thread(target=self._load_version, args=(name, version, path),
                         name=f"load-{name}-{version}", daemon=True).start()

    def _load_version(self, name: str, version: int, path: Path) -> None:
        attempt = 0
        while True:
            try:
                if attempt:
                    log.info("Retrying of Loading servable: {name: %s version: %d} retry: %d of %d", name, version,
                             attempt, self._max_load_retries)
                log.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
                servable = self._load(name, version, path)
                break
            except Exception as exc:
                still_wanted = self._still_aspired(name, version)
                if attempt == 0 and still_wanted and not self._stopping.is_set():
                    log.error("%s", self._first_failure_line(name, version, exc))
                if attempt >= self._max_load_retries or not still_wanted or self._stopping.is_set():
                    self._fail_load(name, version, exc)
                    return
                attempt += 1
                if self._stopping.wait(max(self._load_retry_interval_s, 0)):
                    self._fail_load(name, version, exc)
                    return
        self._repository.set_state(name, version, STATE_AVAILABLE, servable)
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)
        with self._lock:
            tracked = self._models.get(name)
            if tracked is None:  # model removed while loading
                self._unload_version(name, version)
                return
            tracked.loading.discard(version)
            self._reconcile(name, tracked.aspired, tracked.paths)

    def _first_failure_line(self, name: str, version: int, exc: BaseException) -> str:
        """The one line that says what failed and what happens next (the retries, then what)."""
        code, message = error_status_of(exc)
        first_line = message.splitlines()[0] if message else ""
        if self._max_load_retries > 0:
            plan = (f"retrying {self._max_load_retries} more time(s), every {max(self._load_retry_interval_s, 0):g} s "
                    f"(--max_num_load_retries, --load_retry_interval_micros)")
        else:
            plan = "not retrying (--max_num_load_retries=0)"
        if self._starting.is_set() and self._max_load_retries > 0:
            then = ("nothing is served until it loads or gives up, and if it gives up the server exits "
                    "(as tensorflow_model_server does)")
        elif self._starting.is_set():
            then = "the server exits (as tensorflow_model_server does)"
        else:
            then = "the versions already being served keep serving"
        return f"Model {name} version {version} failed to load: {code}: {first_line}; {plan}; {then}."

    def _still_aspired(self, name: str, version: int) -> bool:
        with self._lock:
            tracked = self._models.get(name)
            return tracked is not None and version in tracked.aspired

    def _fail_load(self, name: str, version: int, exc: BaseException) -> None:
        code, message = error_status_of(exc)
        log.error("Loading servable: {name: %s version: %d} failed: %s: %s", name, version, code, message,
                  exc_info=not isinstance(exc, ServingError))
        self._repository.set_state(name, version, STATE_END, error=(code, message))
        with self._lock:
            tracked = self._models.get(name)
            if tracked is not None:
                tracked.loading.discard(version)
                tracked.failed.add(version)

    def _start_unload(self, name: str, version: int) -> None:
        self._models[name].unloading.add(version)
        threading.Thread(target=self._unload_version, args=(name, version),
                         name=f"unload-{name}-{version}", daemon=True).start()

    def _unload_version(self, name: str, version: int) -> None:
        log.info("Unloading servable version {name: %s version: %d}", name, version)
        servable = self._repository.take_for_unload(name, version, self._unload_wait_s)
        try:
            if servable is not None:
                self._unload(servable)
        except Exception:
            log.exception("Unloading {name: %s version: %d} raised", name, version)
        self._repository.set_state(name, version, STATE_END)
        log.info("Done unloading servable version {name: %s version: %d}", name, version)
        with self._lock:
            tracked = self._models.get(name)
            if tracked is not None:
                tracked.unloading.discard(version)

    # -- start-up --------------------------------------------------------------------------

    def initial_outcome(self) -> dict[str, str]:
        """Per model: "available", "failed" (every aspired version failed) or "pending"."""
        with self._lock:
            outcome = {}
            snapshot = self._repository.snapshot()
            for name, tracked in self._models.items():
                states = snapshot.get(name, {})
                if any(s == STATE_AVAILABLE for s in states.values()):
                    outcome[name] = "available"
                elif tracked.aspired and tracked.aspired <= tracked.failed:
                    outcome[name] = "failed"
                else:
                    outcome[name] = "pending"
            return outcome

    def wait_until_settled(self, timeout: float | None = None) -> dict[str, str]:
        """Block until no model is "pending" (the real server waits for this before serving).

        Returns early, with what is known, on ``timeout`` or when the manager is stopped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while "pending" in self.initial_outcome().values():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self._stopping.wait(_SETTLE_CHECK_INTERVAL_S):
                    break
            return self.initial_outcome()
        finally:
            self._starting.clear()

    def failed_versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, error code, error message) of each aspired version of ``name`` whose load failed."""
        with self._lock:
            tracked = self._models.get(name)
            failed = sorted(tracked.failed & tracked.aspired) if tracked else []
        statuses = {int(s["version"]): s["status"] for s in self._repository.version_status(name)} if failed else {}
        return [(v, statuses[v]["error_code"], statuses[v]["error_message"]) for v in failed if v in statuses]
