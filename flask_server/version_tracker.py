"""Which version of a model the gateway calls and reports (``VersionTracker``), over any transport.

Which version answered: TF Serving's predict reply does not say, so the gateway picks the version
itself (``VersionTracker``) and always calls ``/versions/V:predict``; the reported version is
therefore the one that computed the scores. Latest: the highest AVAILABLE version in the model's
status. ``version_label``: the version the model server's metadata reports for
``/labels/L/metadata`` (``model_spec.version``). Both are cached for ``STATUS_TTL`` seconds, so a
newly loaded version is used and reported about a second after it becomes AVAILABLE. If the
model server answers 404 for the chosen version (unloaded by a hot swap), the status is refreshed
and the call retried once on the new version.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask_server.errors import BadModelServerReply, ModelNotAvailable, quote_reply
from flask_server.model_metadata import VersionMetadata
from flask_server.transport import ModelServerTransport

STATUS_TTL = 1.0
# TF Serving's version states (ModelVersionStatus.State); the gateway reports UNAVAILABLE for a
# model whose model server cannot be asked.
AVAILABLE = "AVAILABLE"
UNAVAILABLE = "UNAVAILABLE"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _CachedVersion:
    """A resolved version, until when it may be reused, and the ticket of the resolve that found it."""

    expires_at: float
    version: int
    ticket: int


class VersionTracker:
    """Which version of one model to call (and report), cached for ``ttl`` seconds; see module doc."""

    def __init__(self, client: ModelServerTransport, model_name: str, version: int | None = None,
                 label: str | None = None, ttl: float = STATUS_TTL, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.model_name = model_name
        self.pinned_version = version
        self.label = label
        self.ttl = ttl
        self.clock = clock
        # Resolving calls the model server, so it runs outside the lock; two threads may resolve at
        # once. Each takes a ticket first, and an answer is stored only if no later-started resolve
        # stored one already: otherwise a slow thread that saw v1 could overwrite a fast one's v2
        # during a hot swap, and clients would see the version go backwards for another TTL.
        self._lock = threading.Lock()
        self._tickets = 0
        self._cached: _CachedVersion | None = None
        # A version's metadata never changes while it is loaded (a new export is a new version).
        self._metadata: dict[int, VersionMetadata] = {}

    def current(self, refresh: bool = False) -> int:
        """The version to call now; raises ModelNotAvailable if there is none."""
        with self._lock:
            cached = self._cached
            if not refresh and cached is not None and cached.expires_at > self.clock():
                return cached.version
            self._tickets += 1
            ticket = self._tickets
        version = self._resolve()
        with self._lock:
            cached = self._cached
            if cached is not None and cached.ticket > ticket:
                # A resolve that started after ours has answered: it saw a newer model server state.
                return cached.version
            self._cached = _CachedVersion(self.clock() + self.ttl, version, ticket)
        return version

    def predict(self, call: Callable[[int], T]) -> tuple[T, int]:
        """``call(version)`` on the current version; on 404 (version unloaded) refresh and retry once."""
        version = self.current()
        try:
            return call(version), version
        except ModelNotAvailable:
            fresh = self.current(refresh=True)
            if fresh == version:
                raise
            return call(fresh), fresh

    def metadata(self, version: int) -> VersionMetadata:
        """The version's signatures and export_info, fetched once per version.

        Raises the transport's BackendError when the model server cannot answer (nothing is cached then).
        """
        metadata = self._metadata.get(version)
        if metadata is None:
            reply = self.client.model_metadata(self.model_name, version)
            metadata = self._metadata[version] = VersionMetadata.from_reply(reply)
        return metadata

    def _resolve(self) -> int:
        if self.label is not None:
            reply = self.client.model_metadata(self.model_name, label=self.label)
            version = _spec_version(reply)
            if version is None:
                raise BadModelServerReply(f"metadata of {self.model_name!r} label {self.label!r} has no "
                                          f"model_spec.version: {quote_reply(reply)}")
            self._metadata.setdefault(version, VersionMetadata.from_reply(reply))
            return version
        statuses = self.client.model_status(self.model_name)
        available = sorted(_version_number(s) for s in statuses if s.get("state") == AVAILABLE)
        if self.pinned_version is not None:
            if self.pinned_version in available:
                return self.pinned_version
            raise ModelNotAvailable(f"version {self.pinned_version} of model {self.model_name!r} is not "
                                    f"AVAILABLE on the model server ({_describe_states(statuses)})",
                                    self.client.base_url)
        if not available:
            raise ModelNotAvailable(f"model {self.model_name!r} has no AVAILABLE version on the model "
                                    f"server ({_describe_states(statuses)})", self.client.base_url)
        return available[-1]


def _spec_version(metadata: dict[str, Any]) -> int | None:
    try:
        return int(metadata["model_spec"]["version"])
    except (KeyError, TypeError, ValueError):
        return None


def _version_number(status: dict[str, Any]) -> int:
    try:
        return int(status.get("version"))
    except (TypeError, ValueError) as exc:
        raise BadModelServerReply(f"model status has a non-integer version: {quote_reply(status)}") from exc


def _describe_states(statuses: list[dict[str, Any]]) -> str:
    states = ", ".join(f"version {s.get('version')} {s.get('state')}" for s in statuses)
    return f"states: {states}" if states else "no versions"
