"""The model registry: which route serves which model, from which model server, with which
preprocessing and labels.

Without ``MODELS_CONFIG`` the gateway serves one model: route ``imageclassifier`` -> model
``ImageClassifier`` on ``MODEL_SERVER_URL``, InceptionV3 settings (299x299, ``tf`` preprocessing,
ImageNet labels). With it, the TOML file lists one ``[models.<route>]`` table per route; see
``models.example.toml`` for every key. Unknown keys and bad values raise ``ConfigError`` naming the
file and the key, at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, current_app

from flask_server.backend import (AVAILABLE, INPUT_FORMATS, JSON_FLOATS, RAW_FLOAT32_B64, RAW_UINT8_B64, EncodedBatch,
                                  ModelServerClient, VersionTracker, encode_batch)
from flask_server.config import ConfigError, GatewayConfig
from flask_server.errors import BadModelServerReply, BadRequest, BackendError, ModelNotFound
from flask_server.metrics import backend_timer
from flask_server.labels import IMAGENET, Label, LabelsError, load_labels, top_k
from flask_server.preprocess import INTERPOLATIONS, MODES, load_pixels, scale
from serving_contract.export import (DEFAULT_MODEL_NAME, INPUT_IMAGE, INPUT_PIXELS_BYTES, SERVING_BYTES,
                                     SERVING_DEFAULT, SERVING_UINT8, is_untrained)
from serving_contract.preprocessing import DEFAULT_MODE

DEFAULT_ROUTE = "imageclassifier"
DEFAULT_SIGNATURE = SERVING_UINT8
DEFAULT_INPUT_SIZE = (299, 299)
DEFAULT_PREPROCESSING = DEFAULT_MODE
DEFAULT_INTERPOLATION = "nearest"
DEFAULT_TOP_K = 5
BYTES_INPUT_NAME = INPUT_PIXELS_BYTES
FLOAT_INPUT_NAME = INPUT_IMAGE
# The exporter's signatures (scripts/export_saved_model.py) -> (input_format, input_name) defaults.
KNOWN_SIGNATURES = {
    SERVING_UINT8: (RAW_UINT8_B64, BYTES_INPUT_NAME),
    SERVING_BYTES: (RAW_FLOAT32_B64, BYTES_INPUT_NAME),
    SERVING_DEFAULT: (JSON_FLOATS, FLOAT_INPUT_NAME),
}
# Other signatures whose name ends in this take raw float32 bytes; the rest take float JSON.
BYTES_SUFFIX = "_bytes"
UNTRAINED_WARNING = "model has untrained weights: predictions are meaningless"
UNAVAILABLE = "UNAVAILABLE"
_ROUTE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_EXTENSION_KEY = "flask_server.models"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How the gateway serves one route. ``version`` or ``version_label`` pins a version; neither
    means the latest AVAILABLE one."""

    route: str
    model_server_url: str
    model_name: str = DEFAULT_MODEL_NAME
    version: int | None = None
    version_label: str | None = None
    signature: str = DEFAULT_SIGNATURE
    input_name: str = BYTES_INPUT_NAME
    input_format: str = RAW_UINT8_B64
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    preprocessing: str = DEFAULT_PREPROCESSING
    interpolation: str = DEFAULT_INTERPOLATION
    jpeg_draft: bool = False
    labels: str = IMAGENET
    top_k: int = DEFAULT_TOP_K


# TOML key -> (python type check, description used in error messages)
_KEY_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model_server_url": (str, "an http(s) URL"),
    "model_name": (str, "a model name"),
    "version": (int, "a non-negative integer"),
    "version_label": (str, "a version label"),
    "signature": (str, "a signature name"),
    "input_name": (str, "an input tensor name"),
    "input_format": (str, f"one of {', '.join(INPUT_FORMATS)}"),
    "input_size": (list, "[height, width] in pixels"),
    "preprocessing": (str, f"one of {', '.join(MODES)}"),
    "interpolation": (str, f"one of {', '.join(INTERPOLATIONS)}"),
    "jpeg_draft": (bool, "true or false"),
    "labels": (str, "\"imagenet\" or a labels file path"),
    "top_k": (int, "a positive integer"),
}


def default_specs(config: GatewayConfig) -> dict[str, ModelSpec]:
    """The single built-in route used when ``MODELS_CONFIG`` is unset."""
    return {DEFAULT_ROUTE: ModelSpec(route=DEFAULT_ROUTE, model_server_url=config.model_server_url)}


def load_model_specs(config: GatewayConfig) -> dict[str, ModelSpec]:
    """Routes from ``config.models_config`` (TOML), or the built-in default. Raises ConfigError."""
    if not config.models_config:
        return default_specs(config)
    path = Path(config.models_config)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"MODELS_CONFIG {path}: cannot read it: {exc}") from exc
    unknown = set(document) - {"models"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected [models.<route>] tables")
    tables = document.get("models")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no models; add at least one [models.<route>] table")
    return {route: spec_from_table(route, table, path, config.model_server_url)
            for route, table in tables.items()}


def spec_from_table(route: str, table: Any, source: Path, default_url: str) -> ModelSpec:
    """Validate one ``[models.<route>]`` table into a ModelSpec; errors name ``source`` and the key."""
    where = f"{source}: models.{route}"
    if not _ROUTE_NAME.fullmatch(route):
        raise ConfigError(f"{where}: route names may only use A-Z a-z 0-9 . _ -")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    for key, value in table.items():
        if key not in _KEY_TYPES:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(_KEY_TYPES)}")
        kind, expected = _KEY_TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")
    values = dict(table)
    input_format, input_name = signature_defaults(values.get("signature", DEFAULT_SIGNATURE))
    values.setdefault("input_format", input_format)
    values.setdefault("input_name", input_name)
    values.setdefault("model_server_url", default_url)
    if "input_size" in values:
        values["input_size"] = tuple(values["input_size"])
    labels = values.get("labels", IMAGENET)
    if labels != IMAGENET:
        values["labels"] = str((source.parent / labels).resolve())
    spec = ModelSpec(route=route, **values)
    problem = _check_spec(spec)
    if problem:
        key, message = problem
        raise ConfigError(f"{where}.{key}: {message}")
    return spec


def signature_defaults(signature: str) -> tuple[str, str]:
    """(input_format, input_name) a signature takes unless the config says otherwise."""
    if signature in KNOWN_SIGNATURES:
        return KNOWN_SIGNATURES[signature]
    if signature.endswith(BYTES_SUFFIX):
        return RAW_FLOAT32_B64, BYTES_INPUT_NAME
    return JSON_FLOATS, FLOAT_INPUT_NAME


def model_input(spec: ModelSpec, pixels: np.ndarray) -> np.ndarray:
    """Resized uint8 pixels -> what ``spec``'s input format takes: the pixels themselves when the
    signature scales them in its graph (``raw_uint8_b64``), else float32 scaled here."""
    return pixels if spec.input_format == RAW_UINT8_B64 else scale(pixels, spec.preprocessing)


def _check_spec(spec: ModelSpec) -> tuple[str, str] | None:
    """(key, message) for the first invalid value of ``spec``, or None."""
    if not spec.model_server_url.startswith(("http://", "https://")):
        return "model_server_url", f"expected an http(s) URL, got {spec.model_server_url!r}"
    for key in ("model_name", "signature", "input_name"):
        if not _ROUTE_NAME.fullmatch(getattr(spec, key)):
            return key, f"expected a non-empty name of A-Z a-z 0-9 . _ -, got {getattr(spec, key)!r}"
    if spec.version is not None and spec.version_label is not None:
        return "version_label", "set version or version_label, not both"
    if spec.version is not None and spec.version < 0:
        return "version", f"expected a non-negative integer, got {spec.version}"
    if spec.version_label is not None and not _ROUTE_NAME.fullmatch(spec.version_label):
        return "version_label", f"expected a label of A-Z a-z 0-9 . _ -, got {spec.version_label!r}"
    if spec.input_format not in INPUT_FORMATS:
        return "input_format", f"expected one of {', '.join(INPUT_FORMATS)}, got {spec.input_format!r}"
    if len(spec.input_size) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                            for d in spec.input_size):
        return "input_size", f"expected [height, width] of positive integers, got {list(spec.input_size)!r}"
    if spec.preprocessing not in MODES:
        return "preprocessing", f"expected one of {', '.join(MODES)}, got {spec.preprocessing!r}"
    if spec.interpolation not in INTERPOLATIONS:
        return "interpolation", f"expected one of {', '.join(INTERPOLATIONS)}, got {spec.interpolation!r}"
    if spec.top_k < 1:
        return "top_k", f"expected a positive integer, got {spec.top_k}"
    return None


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Class probabilities (N, classes) and the model version that computed them."""

    probabilities: np.ndarray
    version: int
    warning: str | None


class ServedModel:
    """One configured route at run time: its spec, labels, model server client and version cache."""

    def __init__(self, spec: ModelSpec, labels: list[Label], client: ModelServerClient) -> None:
        self.spec = spec
        self.labels = labels
        self.client = client
        self.versions = VersionTracker(client, spec.model_name, spec.version, spec.version_label)

    @property
    def classes(self) -> int:
        return len(self.labels)

    def load_image(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Image file bytes -> this model's (H, W, 3) input (``model_input``). Raises ImageDecodeError."""
        spec = self.spec
        return model_input(spec, load_pixels(data, spec.input_size, spec.interpolation, max_pixels, spec.jpeg_draft))

    def encode(self, batch: np.ndarray) -> EncodedBatch:
        """The model server request body for ``batch`` (N, H, W, 3) of ``load_image`` arrays."""
        return encode_batch(self.spec, batch)

    def predict(self, batch: np.ndarray | EncodedBatch, request_id: str | None) -> Prediction:
        """Run ``batch`` (N, H, W, 3), or its ``encode``d body, on the model server.

        Raises a BackendError subclass on failure.
        """
        encoded = batch if isinstance(batch, EncodedBatch) else self.encode(batch)

        def call(version: int) -> np.ndarray:
            self._check_export(version)
            return self.client.predict_encoded(self.spec, encoded, version, request_id)

        with backend_timer(self.spec.route):
            probabilities, version = self.versions.predict(call)
        if probabilities.shape != (encoded.size, self.classes):
            raise BadModelServerReply(
                f"model {self.spec.model_name!r} version {version} returned scores of shape "
                f"{list(probabilities.shape)} for {encoded.size} image(s); the gateway has "
                f"{self.classes} labels for it (check models.{self.spec.route}.labels in MODELS_CONFIG)")
        return Prediction(probabilities, version, self.warning(version))

    def top_k(self, probabilities: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` best classes of one image as ``{"wnid", "label", "score"}`` dicts."""
        return [{"wnid": wnid, "label": label, "score": score}
                for wnid, label, score in top_k(probabilities, self.labels, k)]

    def check_top_k(self, k: int) -> int:
        """``k`` if it is a valid number of classes to return, else BadRequest."""
        if not 1 <= k <= self.classes:
            raise BadRequest(f"top_k must be between 1 and {self.classes} for model {self.spec.route!r}, got {k}")
        return k

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


class ModelRegistry:
    """Route name -> ServedModel, one ModelServerClient (connection pool) per model server, the
    GatewayConfig the views need (batch and pixel limits) and the process's decode slots."""

    def __init__(self, specs: Mapping[str, ModelSpec], config: GatewayConfig) -> None:
        self.config = config
        #: Held while an image is decoded and preprocessed (GATEWAY_DECODE_CONCURRENCY slots).
        self.decode_slots = threading.BoundedSemaphore(config.decode_concurrency)
        self.clients: dict[str, ModelServerClient] = {}
        self.models: dict[str, ServedModel] = {}
        labels_cache: dict[str, list[Label]] = {}
        for route, spec in specs.items():
            if spec.labels not in labels_cache:
                try:
                    labels_cache[spec.labels] = load_labels(spec.labels)
                except LabelsError as exc:
                    raise ConfigError(f"models.{route}.labels: {exc}") from exc
            if spec.model_server_url not in self.clients:
                self.clients[spec.model_server_url] = ModelServerClient.from_config(spec.model_server_url, config)
            self.models[route] = ServedModel(spec, labels_cache[spec.labels], self.clients[spec.model_server_url])

    def get(self, route: str) -> ServedModel:
        """The model served at ``route``; raises ModelNotFound (404)."""
        try:
            return self.models[route]
        except KeyError:
            raise ModelNotFound(f"no model named {route!r}; this gateway serves: "
                                f"{', '.join(sorted(self.models))}") from None

    def close(self) -> None:
        """Close every model server connection pool."""
        for client in self.clients.values():
            client.close()


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Load the model specs and labels and attach the registry to ``app``. Raises ConfigError."""
    app.extensions[_EXTENSION_KEY] = ModelRegistry(load_model_specs(config), config)


def get_registry() -> ModelRegistry:
    """The current app's ModelRegistry."""
    return current_app.extensions[_EXTENSION_KEY]


def get_model(route: str) -> ServedModel:
    """The model served at ``route`` in the current app; raises ModelNotFound (404)."""
    return get_registry().get(route)
