"""The gateway's model configuration: which route serves which model, from which model server,
with which input format, preprocessing and labels (``ModelSpec``), and the names and defaults
every other gateway module takes from here.

Without ``MODELS_CONFIG`` the gateway serves one model: route ``imageclassifier`` -> model
``ImageClassifier`` on ``MODEL_SERVER_URL``, InceptionV3 settings (299x299, ``tf`` preprocessing,
ImageNet labels). With it, the TOML file lists one ``[models.<route>]`` table per route; see
``models.example.toml`` for every key. Unknown keys and bad values raise ``ConfigError`` naming the
file and the key, at start-up.

Pure configuration: nothing here talks to a model server or knows Flask.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from flask_server.config import GRPC_URL_SCHEME, ConfigError, GatewayConfig
from flask_server.labels import IMAGENET
from flask_server.preprocess import INTERPOLATIONS
from serving_contract.export import (DEFAULT_MODEL_NAME, INPUT_IMAGE, INPUT_PIXELS_BYTES, SERVING_BYTES,
                                     SERVING_DEFAULT, SERVING_TOPK, SERVING_UINT8)
from serving_contract.preprocessing import DEFAULT_MODE, MODES

# The tutorial's route, /v1/models/imageclassifier/predict: route_for_model(DEFAULT_MODEL_NAME).
DEFAULT_ROUTE = DEFAULT_MODEL_NAME.lower()
DEFAULT_SIGNATURE = SERVING_UINT8
DEFAULT_INPUT_SIZE = (299, 299)
DEFAULT_PREPROCESSING = DEFAULT_MODE
DEFAULT_INTERPOLATION = "nearest"
DEFAULT_TOP_K = 5
BYTES_INPUT_NAME = INPUT_PIXELS_BYTES
FLOAT_INPUT_NAME = INPUT_IMAGE
# How pixels travel to the model server (ModelSpec.input_format): raw uint8 pixels in {"b64": ...},
# scaled by the model's graph (the fast path: serving_uint8); raw float32 pixels the gateway scaled,
# in {"b64": ...} (serving_bytes); or float JSON (serving_default).
RAW_UINT8_B64 = "raw_uint8_b64"
RAW_FLOAT32_B64 = "raw_float32_b64"
JSON_FLOATS = "json"
INPUT_FORMATS = (RAW_UINT8_B64, RAW_FLOAT32_B64, JSON_FLOATS)
# The exporter's signatures (scripts/export_saved_model.py) -> (input_format, input_name) defaults.
KNOWN_SIGNATURES = {
    SERVING_TOPK: (RAW_UINT8_B64, BYTES_INPUT_NAME),
    SERVING_UINT8: (RAW_UINT8_B64, BYTES_INPUT_NAME),
    SERVING_BYTES: (RAW_FLOAT32_B64, BYTES_INPUT_NAME),
    SERVING_DEFAULT: (JSON_FLOATS, FLOAT_INPUT_NAME),
}
# Other signatures whose name ends in this take raw float32 bytes; the rest take float JSON.
BYTES_SUFFIX = "_bytes"
UNTRAINED_WARNING = "model has untrained weights: predictions are meaningless"
# How the gateway talks to a model server: TF Serving's REST API, or its gRPC API (grpc_transport.py).
PROTOCOL_REST = "rest"
PROTOCOL_GRPC = "grpc"
PROTOCOLS = (PROTOCOL_REST, PROTOCOL_GRPC)
_ROUTE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How the gateway serves one route. ``version`` or ``version_label`` pins a version; neither
    means the latest AVAILABLE one.

    ``explicit`` names the keys the route's MODELS_CONFIG table states. The others are defaults
    that each served version's metadata may replace (model_metadata.version_settings).
    """

    route: str
    model_server_url: str
    protocol: str = PROTOCOL_REST
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
    explicit: frozenset[str] = frozenset()


# TOML key -> (python type check, description used in error messages)
_KEY_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model_server_url": (str, "an http(s) URL, or grpc://host:port with protocol = \"grpc\""),
    "protocol": (str, f"one of {', '.join(PROTOCOLS)}"),
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


def route_for_model(model_name: str) -> str:
    """The gateway route a model server's model gets by default: its name lowercased
    (``MobileNetV2`` -> ``/v1/models/mobilenetv2/predict``; the tutorial's ``ImageClassifier`` ->
    ``imageclassifier``)."""
    return model_name.lower()


def render_models_config(model_names: list[str]) -> str:
    """A MODELS_CONFIG TOML with one route per model (``route_for_model``) and nothing else: the
    model server URL comes from ``MODEL_SERVER_URL`` and the rest from each version's metadata."""
    # JSON strings are TOML basic strings: quoted, so a "." in a name cannot nest tables.
    tables = [f"[models.{json.dumps(route_for_model(name))}]\nmodel_name = {json.dumps(name)}\n"
              for name in model_names]
    return "# Written by scripts/auto_cmd.py: one route per served model.\n\n" + "\n".join(tables)


def default_specs(config: GatewayConfig) -> dict[str, ModelSpec]:
    """The single built-in route used when ``MODELS_CONFIG`` is unset (gRPC when MODEL_SERVER_URL is grpc://)."""
    url = config.model_server_url
    return {DEFAULT_ROUTE: ModelSpec(route=DEFAULT_ROUTE, model_server_url=url, protocol=protocol_of(url))}


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
    values: dict[str, Any] = {**table, "explicit": frozenset(table)}
    input_format, input_name = signature_defaults(values.get("signature", DEFAULT_SIGNATURE))
    values.setdefault("input_format", input_format)
    values.setdefault("input_name", input_name)
    values.setdefault("model_server_url", default_url)
    values.setdefault("protocol", protocol_of(values["model_server_url"]))
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


def protocol_of(model_server_url: str) -> str:
    """The protocol a URL implies when the config names none: gRPC for ``grpc://``, else REST."""
    return PROTOCOL_GRPC if model_server_url.startswith(GRPC_URL_SCHEME) else PROTOCOL_REST


def signature_defaults(signature: str) -> tuple[str, str]:
    """(input_format, input_name) a signature takes unless the config says otherwise."""
    if signature in KNOWN_SIGNATURES:
        return KNOWN_SIGNATURES[signature]
    if signature.endswith(BYTES_SUFFIX):
        return RAW_FLOAT32_B64, BYTES_INPUT_NAME
    return JSON_FLOATS, FLOAT_INPUT_NAME


def _check_spec(spec: ModelSpec) -> tuple[str, str] | None:
    """(key, message) for the first invalid value of ``spec``, or None."""
    if spec.protocol not in PROTOCOLS:
        return "protocol", f"expected one of {', '.join(PROTOCOLS)}, got {spec.protocol!r}"
    if spec.protocol == PROTOCOL_GRPC and not spec.model_server_url.startswith(GRPC_URL_SCHEME):
        return "model_server_url", f"expected grpc://host:port with protocol = \"grpc\", got {spec.model_server_url!r}"
    if spec.protocol == PROTOCOL_REST and not spec.model_server_url.startswith(("http://", "https://")):
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


