"""The interface between the gateway and a model server: what a transport must do, so that each
configured model can be served over REST (``backend.ModelServerClient``, today's only transport),
gRPC or the KServe v2 protocol without the rest of the gateway changing.

``ServedModel`` (served_model.py) and ``VersionTracker`` (version_tracker.py) only call the methods
of ``ModelServerTransport`` below; the registry (registry.py, ``open_transport``) builds one
transport per model server and hands it to every model served from there.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flask_server.model_config import ModelSpec


@dataclasses.dataclass(frozen=True)
class EncodedBatch:
    """A predict request for ``size`` images in a transport's own wire form, built once by
    ``ModelServerTransport.encode``.

    The request does not depend on the version it is sent to, so a retry on a newer version re-sends
    it, and the pixels it was built from can be freed while the model server computes.
    """

    body: bytes
    size: int


@dataclasses.dataclass(frozen=True)
class TopK:
    """A ``serving_topk`` answer for N images: each image's best ``k`` classes, best first, as
    ``scores`` float32 (N, k), ``class_index`` (N, k) and the class ids and labels (N lists of k)."""

    scores: np.ndarray
    class_index: np.ndarray
    class_id: list[list[str]]
    class_label: list[list[str]]


@runtime_checkable
class ModelServerTransport(Protocol):
    """How the gateway talks to one model server. Implement every member to add a transport.

    Contract (``backend.ModelServerClient`` is the reference implementation):

    * ``base_url``: the model server's address. Only ever put in an error's log-only ``detail``,
      never in a message a client sees (it is an internal address).
    * ``model_status(name)``: TF Serving's ``model_version_status`` list for the model, one dict per
      version as TF Serving's REST API spells it (the JSON form of the gRPC ``GetModelStatusResponse``):
      ``{"version": "3", "state": "AVAILABLE", ...}``. A gRPC transport converts its reply with the
      protobuf JSON mapping; a KServe v2 transport builds the same dicts from its model/ready calls.
    * ``model_metadata(name, version=None, label=None)``: ``{"model_spec": {"version": "3", ...},
      "metadata": {...}}`` for that version, label or the latest. ``metadata.export_info`` is our
      model server's extension; answer without it when the server has none.
    * ``encode(spec, batch, k=None)``: the predict request for ``batch`` (N, H, W, 3) in this
      transport's wire form, as an ``EncodedBatch`` of N images. ``batch`` is what
      ``wire_format.model_input`` made for ``spec``: uint8 pixels for ``raw_uint8_b64``, scaled
      float32 otherwise. ``k`` is sent with each image when ``spec.signature`` is ``serving_topk``.
    * ``predict(spec, encoded, version)``: run ``encoded`` on exactly that version of
      ``spec.model_name`` with ``spec.signature``; return the scores as float32 (N, classes).
    * ``predict_top_k(spec, encoded, version)``: the same for ``serving_topk``, whose answer is
      each image's best classes with their names (``TopK``). The gateway only calls it for versions
      whose metadata lists ``serving_topk``.
    * ``close()``: release connections.

    Every method takes an optional ``request_id`` to forward (REST sends it as ``X-Request-ID``).
    Errors are the gateway's ``errors.BackendError`` subclasses, never a library's own exception:
    ``ModelNotAvailable`` when the server does not have that model or version (the caller then
    refreshes the version and retries once), ``ModelServerUnavailable`` when it cannot be reached
    or is overloaded, ``ModelServerTimeout`` when it does not answer in time, ``BadModelServerReply``
    for anything it answers that is not the expected reply. Messages name the model, never
    ``base_url``; translate at one boundary and chain the cause (``raise ... from exc``).
    """

    base_url: str

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        """The model's version states (see the class docstring)."""
        ...

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        """The model's metadata for a version, a label or the latest (see the class docstring)."""
        ...

    def encode(self, spec: ModelSpec, batch: np.ndarray, k: int | None = None) -> EncodedBatch:
        """The predict request for ``batch`` (N, H, W, 3) in this transport's wire form."""
        ...

    def predict(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                request_id: str | None = None) -> np.ndarray:
        """Scores (N, classes) float32 from that exact version."""
        ...

    def predict_top_k(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                      request_id: str | None = None) -> TopK:
        """``serving_topk``'s best classes for each image, from that exact version."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
