"""One served model at run time (``ServedModel``) and its prediction pipeline, in the spirit of
KServe's ``Model``: ``classify(images, k, request_id)`` picks the version (``VersionTracker``),
takes that version's settings from its metadata (``model_metadata.version_settings``: input size,
preprocessing, signature, labels), decodes and preprocesses each image (holding a decode slot),
encodes the batch for the model's transport, predicts and ranks the top k (or lets
``serving_topk`` rank and name them). Views only parse requests and render ``Prediction``s;
``status`` answers the model listing and readiness.

With a response cache (``GATEWAY_CACHE``, response_cache.py), each image's answer is looked up
under the version about to be called, a digest of that version's settings, ``k`` and the image's
hash: when every image is there, the request is answered without decoding anything or calling the
model server; otherwise it runs as usual and each image's answer is stored under the version that
computed it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, TypedDict

import numpy as np

from flask_server.cache_stores import ResponseCache
from flask_server.errors import BackendError, BadModelServerReply, BadRequest
from flask_server.labels import Label, top_k
from flask_server.metrics import backend_timer
from flask_server.model_config import UNTRAINED_WARNING, ModelSpec
from flask_server.model_metadata import VersionMetadata, VersionSettings, version_settings
from flask_server.preprocess import DEFAULT_MAX_PIXELS, ImageDecodeError, load_pixels
from flask_server.response_cache import HIT, MISS, CachedModel, answer_identity
from flask_server.transport import ModelServerTransport, TopK
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
    """One ``classify`` call's answer: class probabilities (N, classes; None when ``serving_topk``
    ranked them on the model server), each image's ``k`` best classes, the model version that
    computed them, and the untrained-weights warning if any.

    ``cache`` is ``"hit"`` (then ``probabilities`` is None: the cache keeps only the top k),
    ``"miss"``, or None when the route has no response cache."""

    probabilities: np.ndarray | None
    top_k: list[list[ClassScore]]
    version: int
    warning: str | None
    cache: str | None = None


class ServedModel:
    """One configured route at run time: its spec, its labels (the route's, used where a version's
    export carries none), transport and version cache, and the one prediction pipeline
    (``classify``) every view and script goes through.

    ``decode_slots`` is held while one image is decoded and preprocessed (the registry shares one
    ``GATEWAY_DECODE_CONCURRENCY`` semaphore between all models); ``max_pixels`` bounds a decoded image.
    ``cache`` (None: off) answers repeated images (module doc).
    """

    def __init__(self, spec: ModelSpec, labels: list[Label], client: ModelServerTransport,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode_slots: contextlib.AbstractContextManager[Any] | None = None,
                 cache: ResponseCache | None = None) -> None:
        self.spec = spec
        self.labels = labels
        self.client = client
        self.max_pixels = max_pixels
        self.decode_slots = decode_slots if decode_slots is not None else contextlib.nullcontext()
        self.versions = VersionTracker(client, spec.model_name, spec.version, spec.version_label)
        self._settings: dict[int, VersionSettings] = {}
        self.cache = None if cache is None else CachedModel(cache, spec.route)
        # version -> (the settings a digest was made of, the digest), so it is made once per version
        self._answer_ids: dict[int, tuple[VersionSettings, str]] = {}

    def classify(self, images: list[bytes], k: int | None = None, request_id: str | None = None) -> Prediction:
        """Image files -> each image's ``k`` best classes, computed by the model server.

        On the current version, with its settings: decodes and preprocesses every image in this
        thread (holding a decode slot per image), encodes the batch for the transport, predicts and
        ranks the scores. ``k`` None is the route's ``top_k``, capped at the model's classes. If a
        hot swap unloads the version meanwhile, the whole pipeline runs again on the new one (whose
        input size or classes may differ). With a response cache, answers from it when every image
        is there for that version (module doc); errors raise before anything is stored.

        Raises BadRequest (400) for a ``k`` out of range or an image that cannot be decoded (naming
        ``instances[i]`` in a batch), a BackendError subclass when the model server fails.
        """
        try:
            self.versions.current()
        except BackendError:
            # A bad image is the client's error whatever state the model server is in: say so first.
            self.preprocess(images, self.spec)
            raise
        prediction, _ = self.versions.predict(lambda version: self._classify_on(version, images, k, request_id))
        return prediction

    def settings(self, version: int) -> VersionSettings:
        """How ``version`` is called: its metadata's settings, the route's explicit keys winning.

        Cached per version. When the model server cannot give the metadata now, the route's own
        spec and labels are used for this call (and the metadata asked for again next time).
        """
        settings = self._settings.get(version)
        if settings is None:
            try:
                metadata = self.versions.metadata(version)
            except BackendError as exc:
                logger.warning("model %s version %s: no metadata (%s); using the route's settings",
                               self.spec.route, version, exc.log_message)
                return version_settings(self.spec, self.labels, VersionMetadata())
            settings = self._settings[version] = version_settings(self.spec, self.labels, metadata)
        return settings

    def check_top_k(self, k: int, version: int | None = None) -> int:
        """``k`` if it is a valid number of classes to return (of ``version``, default the current
        one), else BadRequest."""
        try:
            classes = self.settings(self.versions.current() if version is None else version).classes
        except BackendError:
            # The model server's trouble is reported when the images are sent; until then the
            # route's labels give the bound, so a bad top_k is still the error a client sees.
            classes = len(self.labels)
        if k < 1 or (classes is not None and k > classes):
            raise BadRequest(self._top_k_message(k, classes))
        return k

    def _top_k_message(self, k: int, classes: int | None) -> str:
        bound = f"between 1 and {classes}" if classes is not None else "at least 1"
        return f"top_k must be {bound} for model {self.spec.route!r}, got {k}"

    def _classify_on(self, version: int, images: list[bytes], k: int | None, request_id: str | None) -> Prediction:
        settings = self.settings(version)
        if k is None:
            k = self.spec.top_k if settings.classes is None else min(self.spec.top_k, settings.classes)
        else:
            k = self.check_top_k(k, version)
        self._check_export(version, settings)
        if self.cache is None:
            return self._predict_on(version, settings, images, k, request_id)
        # The version about to be called is in the key, so an older version's entries never answer.
        keys = self.cache.keys(self.answer_identity(version, settings), version, k, images)
        answers = self.cache.lookup(keys)
        if answers is not None:
            return Prediction(None, answers, version, self.warning(version), HIT)  # type: ignore[arg-type]
        prediction = self._predict_on(version, settings, images, k, request_id)
        self.cache.store(keys, prediction.top_k)  # type: ignore[arg-type]
        return dataclasses.replace(prediction, cache=MISS)

    def answer_identity(self, version: int, settings: VersionSettings) -> str:
        """A digest of everything besides the version, ``k`` and the image that decides ``version``'s
        answers: its resolved spec (model, server, signature, input format and size, preprocessing...),
        its labels and the pixel limit. The response cache keys on it; made once per version."""
        known = self._answer_ids.get(version)
        if known is not None and known[0] is settings:
            return known[1]
        identity = answer_identity({"spec": dataclasses.asdict(settings.spec), "labels": settings.labels,
                                    "max_pixels": self.max_pixels})
        self._answer_ids[version] = (settings, identity)
        return identity

    def _predict_on(self, version: int, settings: VersionSettings, images: list[bytes], k: int,
                    request_id: str | None) -> Prediction:
        """Decode, encode, predict and rank ``images`` on ``version`` with its ``settings``."""
        spec = settings.spec
        # Encoded in its own statement so the pixel batch is freed before the wait on the model server.
        encoded = self.client.encode(spec, self.preprocess(images, spec), k)
        with backend_timer(self.spec.route):
            answer = (self.client.predict_top_k(spec, encoded, version, request_id) if settings.top_k_signature
                      else self.client.predict(spec, encoded, version, request_id))
        if isinstance(answer, TopK):
            return Prediction(None, self._ranked(answer, settings.labels, k), version, self.warning(version))
        if settings.labels is None or answer.shape != (encoded.size, len(settings.labels)):
            raise BadModelServerReply(
                f"model {spec.model_name!r} version {version} returned scores of shape "
                f"{list(answer.shape)} for {encoded.size} image(s); the gateway has "
                f"{settings.classes} labels for it (check models.{self.spec.route}.labels in MODELS_CONFIG)")
        ranked = [self.top_k(scores, k, settings.labels) for scores in answer]
        return Prediction(answer, ranked, version, self.warning(version))

    def preprocess(self, images: list[bytes], spec: ModelSpec | None = None) -> np.ndarray:
        """Decode and preprocess each image into one (N, H, W, 3) batch of ``load_image`` arrays."""
        arrays = []
        for i, data in enumerate(images):
            try:
                # One slot per image, not per request, so a batch does not hold up single images.
                with self.decode_slots:
                    arrays.append(self.load_image(data, spec))
            except ImageDecodeError as exc:
                where = f"instances[{i}]: " if len(images) > 1 else ""
                raise BadRequest(f"{where}{exc}") from exc
        # One image (nearly every request) is a view, not a copy.
        return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)

    def load_image(self, data: bytes, spec: ModelSpec | None = None) -> np.ndarray:
        """Image file bytes -> the (H, W, 3) input of ``spec`` (default: the route's) (``model_input``).

        Raises ImageDecodeError.
        """
        spec = spec or self.spec
        pixels = load_pixels(data, spec.input_size, spec.interpolation, self.max_pixels, spec.jpeg_draft)
        return model_input(spec, pixels)

    def top_k(self, probabilities: np.ndarray, k: int, labels: list[Label] | None = None) -> list[ClassScore]:
        """The ``k`` best classes of one image (``labels`` default: the route's)."""
        return [ClassScore(wnid=wnid, label=label, score=score)
                for wnid, label, score in top_k(probabilities, self.labels if labels is None else labels, k)]

    def _ranked(self, answer: TopK, labels: list[Label] | None, k: int) -> list[list[ClassScore]]:
        """serving_topk's answer as ClassScores; the route's explicit labels rename the classes by index."""
        rows = []
        for scores, indices, ids, names in zip(answer.scores, answer.class_index, answer.class_id,
                                               answer.class_label, strict=True):
            if labels is not None:
                if not all(0 <= i < len(labels) for i in indices):
                    raise BadModelServerReply(
                        f"model {self.spec.model_name!r} returned class indices {list(indices)} but the gateway "
                        f"has {len(labels)} labels for it (check models.{self.spec.route}.labels in MODELS_CONFIG)")
                ids, names = [labels[i][0] for i in indices], [labels[i][1] for i in indices]
            rows.append([ClassScore(wnid=ident, label=name, score=float(score))
                         for ident, name, score in zip(ids, names, scores, strict=True)][:k])
        return rows

    def warning(self, version: int) -> str | None:
        """The untrained-weights warning if the version's export_info says so."""
        return UNTRAINED_WARNING if is_untrained(self.export_info(version)) else None

    def export_info(self, version: int) -> dict[str, Any]:
        """The version's export_info, or {} when the model server has none or cannot give it now:
        it only adds a warning and a config check, so its absence must not fail a prediction."""
        try:
            return self.versions.metadata(version).export_info
        except BackendError as exc:
            logger.warning("model %s version %s: no export_info (%s)", self.spec.route, version, exc.log_message)
            return {}

    def _check_export(self, version: int, settings: VersionSettings) -> None:
        """BadModelServerReply (502) naming the config key when the version cannot take this route's
        requests (an explicit signature it lacks, an explicit input size its export disagrees
        with); otherwise the model server's own error would be an opaque reshape or lookup failure."""
        try:
            metadata = self.versions.metadata(version)
        except BackendError:
            return  # settings() has logged it; the model server will judge the request itself
        route, name, spec = self.spec.route, self.spec.model_name, settings.spec
        if metadata.signatures and spec.signature not in metadata.signatures:
            raise BadModelServerReply(
                f"model {name!r} version {version} has no signature {spec.signature!r} (it has "
                f"{', '.join(sorted(metadata.signatures))}); export it again with scripts/export_saved_model.py "
                f"or set models.{route}.signature in MODELS_CONFIG")
        expected = metadata.input_size()
        if expected and tuple(expected) != tuple(spec.input_size):
            raise BadModelServerReply(
                f"model {name!r} version {version} takes {expected[0]}x{expected[1]} images "
                f"but the gateway is configured for {spec.input_size[0]}x{spec.input_size[1]} "
                f"(models.{route}.input_size in MODELS_CONFIG)")

    def status(self) -> dict[str, Any]:
        """``{"model", "model_name", "state", "model_version"[, "classes", "warning"]}``; never raises
        for backend trouble: an unreachable model server gives state UNAVAILABLE and its ``error``.

        The model server's URL is internal: it is logged with the error, never put in the body."""
        body: dict[str, Any] = {"model": self.spec.route, "model_name": self.spec.model_name}
        try:
            version = self.versions.current(refresh=True)
            warning = self.warning(version)
            classes = self.settings(version).classes
        except BackendError as exc:
            logger.warning("model %s: %s", self.spec.route, exc.log_message)
            return {**body, "state": UNAVAILABLE, "error": exc.message}
        body.update(state=AVAILABLE, model_version=version)
        if classes is not None:
            body["classes"] = classes
        if warning:
            body["warning"] = warning
        return body
