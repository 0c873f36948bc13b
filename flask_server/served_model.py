"""One served model at run time (``ServedModel``) and its prediction pipeline, in the spirit of
KServe's ``Model``: ``classify(images, k, request_id)`` decodes and preprocesses each image (holding
a decode slot), encodes the batch for the model's transport, predicts on the version the
``VersionTracker`` picks, checks the reply against the labels and ranks the top k. Views only
parse requests and render ``Prediction``s; ``status`` answers the model listing and readiness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, TypedDict

import numpy as np

from flask_server.errors import BackendError, BadModelServerReply, BadRequest
from flask_server.labels import Label, top_k
from flask_server.metrics import backend_timer
from flask_server.model_config import UNTRAINED_WARNING, ModelSpec
from flask_server.preprocess import DEFAULT_MAX_PIXELS, ImageDecodeError, load_pixels
from flask_server.transport import EncodedBatch, ModelServerTransport
from flask_server.version_tracker import AVAILABLE, UNAVAILABLE, VersionTracker
from flask_server.wire_format import model_input
from serving_contract.export import is_untrained

logger = logging.getLogger(__name__)


class ClassScore(TypedDict):
    """One of an image's best classes, as the gateway answers it."""

    wnid: str
    label: str
    score: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One ``classify`` call's answer: class probabilities (N, classes), each image's ``k`` best
    classes, the model version that computed them, and the untrained-weights warning if any."""

    probabilities: np.ndarray
    top_k: list[list[ClassScore]]
    version: int
    warning: str | None


class ServedModel:
    """One configured route at run time: its spec, labels, transport and version cache, and the one
    prediction pipeline (``classify``) every view and script goes through.

    ``decode_slots`` is held while one image is decoded and preprocessed (the registry shares one
    ``GATEWAY_DECODE_CONCURRENCY`` semaphore between all models); ``max_pixels`` bounds a decoded image.
    """

    def __init__(self, spec: ModelSpec, labels: list[Label], client: ModelServerTransport,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode_slots: contextlib.AbstractContextManager[Any] | None = None) -> None:
        self.spec = spec
        self.labels = labels
        self.client = client
        self.max_pixels = max_pixels
        self.decode_slots = decode_slots if decode_slots is not None else contextlib.nullcontext()
        self.versions = VersionTracker(client, spec.model_name, spec.version, spec.version_label)

    @property
    def classes(self) -> int:
        """How many classes the model scores (one per label)."""
        return len(self.labels)

    def classify(self, images: list[bytes], k: int | None = None, request_id: str | None = None) -> Prediction:
        """Image files -> each image's ``k`` best classes, computed by the model server.

        Decodes and preprocesses every image in this thread (holding a decode slot per image),
        encodes the batch for the transport, predicts on the current version and ranks the scores.
        ``k`` None is the route's ``top_k``, capped at the model's classes.

        Raises BadRequest (400) for a ``k`` out of range or an image that cannot be decoded (naming
        ``instances[i]`` in a batch), a BackendError subclass when the model server fails.
        """
        k = min(self.spec.top_k, self.classes) if k is None else self.check_top_k(k)
        # Encoded in its own statement so the pixel batch is freed before the wait on the model server.
        encoded = self.client.encode(self.spec, self.preprocess(images))
        probabilities, version = self.predict(encoded, request_id)
        return Prediction(probabilities, [self.top_k(scores, k) for scores in probabilities], version,
                          self.warning(version))

    def check_top_k(self, k: int) -> int:
        """``k`` if it is a valid number of classes to return, else BadRequest."""
        if not 1 <= k <= self.classes:
            raise BadRequest(f"top_k must be between 1 and {self.classes} for model {self.spec.route!r}, got {k}")
        return k

    def preprocess(self, images: list[bytes]) -> np.ndarray:
        """Decode and preprocess each image into one (N, H, W, 3) batch of ``load_image`` arrays."""
        arrays = []
        for i, data in enumerate(images):
            try:
                # One slot per image, not per request, so a batch does not hold up single images.
                with self.decode_slots:
                    arrays.append(self.load_image(data))
            except ImageDecodeError as exc:
                where = f"instances[{i}]: " if len(images) > 1 else ""
                raise BadRequest(f"{where}{exc}") from exc
        # One image (nearly every request) is a view, not a copy.
        return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)

    def load_image(self, data: bytes) -> np.ndarray:
        """Image file bytes -> this model's (H, W, 3) input (``model_input``). Raises ImageDecodeError."""
        spec = self.spec
        pixels = load_pixels(data, spec.input_size, spec.interpolation, self.max_pixels, spec.jpeg_draft)
        return model_input(spec, pixels)

    def predict(self, encoded: EncodedBatch, request_id: str | None) -> tuple[np.ndarray, int]:
        """Scores (N, classes) for an encoded batch and the version that computed them.

        Raises a BackendError subclass on failure.
        """
        def call(version: int) -> np.ndarray:
            self._check_export(version)
            return self.client.predict(self.spec, encoded, version, request_id)

        with backend_timer(self.spec.route):
            probabilities, version = self.versions.predict(call)
        if probabilities.shape != (encoded.size, self.classes):
            raise BadModelServerReply(
                f"model {self.spec.model_name!r} version {version} returned scores of shape "
                f"{list(probabilities.shape)} for {encoded.size} image(s); the gateway has "
                f"{self.classes} labels for it (check models.{self.spec.route}.labels in MODELS_CONFIG)")
        return probabilities, version

    def top_k(self, probabilities: np.ndarray, k: int) -> list[ClassScore]:
        """The ``k`` best classes of one image."""
        return [ClassScore(wnid=wnid, label=label, score=score)
                for wnid, label, score in top_k(probabilities, self.labels, k)]

    def warning(self, version: int) -> str | None:
        """The untrained-weights warning if the version's export_info says so."""
        return UNTRAINED_WARNING if is_untrained(self.export_info(version)) else None

    def export_info(self, version: int) -> dict[str, Any]:
        """The version's export_info, or {} when the model server has none or cannot give it now:
        it only adds a warning and a config check, so its absence must not fail a prediction."""
        try:
            return self.versions.export_info(version)
        except BackendError as exc:
            logger.warning("model %s version %s: no export_info (%s)", self.spec.route, version, exc.log_message)
            return {}

    def _check_export(self, version: int) -> None:
        """BadModelServerReply (502) naming the config key when the version's export_info shows it
        cannot take this route's requests; otherwise the model server's own error would be an opaque
        reshape or lookup failure."""
        info = self.export_info(version)
        route, name = self.spec.route, self.spec.model_name
        signatures = info.get("signatures")
        if isinstance(signatures, dict) and signatures and self.spec.signature not in signatures:
            raise BadModelServerReply(
                f"model {name!r} version {version} has no signature {self.spec.signature!r} (it has "
                f"{', '.join(sorted(signatures))}); export it again with scripts/export_saved_model.py "
                f"or set models.{route}.signature in MODELS_CONFIG")
        expected = info.get("input_size")
        if expected and tuple(expected) != tuple(self.spec.input_size):
            raise BadModelServerReply(
                f"model {name!r} version {version} takes {expected[0]}x{expected[1]} images "
                f"but the gateway is configured for {self.spec.input_size[0]}x{self.spec.input_size[1]} "
                f"(models.{route}.input_size in MODELS_CONFIG)")

    def status(self) -> dict[str, Any]:
        """``{"model", "model_name", "state", "model_version"[, "warning"]}``; never raises for
        backend trouble: an unreachable model server gives state UNAVAILABLE and its ``error``.

        The model server's URL is internal: it is logged with the error, never put in the body."""
        body: dict[str, Any] = {"model": self.spec.route, "model_name": self.spec.model_name}
        try:
            version = self.versions.current(refresh=True)
            warning = self.warning(version)
        except BackendError as exc:
            logger.warning("model %s: %s", self.spec.route, exc.log_message)
            return {**body, "state": UNAVAILABLE, "error": exc.message}
        body.update(state=AVAILABLE, model_version=version)
        if warning:
            body["warning"] = warning
        return body
