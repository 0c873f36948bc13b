"""The model registry: route name -> ``ServedModel``, built from the model specs at start-up, and
the Flask accessors views use (``init_app``, ``get_registry``, ``get_model``).

``open_transport`` is the one place that decides how the gateway talks to a model server; every
model served from the same server shares its transport (one connection pool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from flask import Flask, current_app

from flask_server import response_cache
from flask_server.backend import ModelServerClient
from flask_server.cache_stores import ResponseCache
from flask_server.config import ConfigError, GatewayConfig
from flask_server.errors import ModelNotFound
from flask_server.labels import Label, LabelsError, load_labels
from flask_server.model_config import PROTOCOL_GRPC, ModelSpec, load_model_specs
from flask_server.served_model import ServedModel
from flask_server.transport import ModelServerTransport

_EXTENSION_KEY = "flask_server.registry"


def open_transport(spec: ModelSpec, config: GatewayConfig) -> ModelServerTransport:
    """The transport to ``spec.model_server_url``, with the gateway's timeouts and pool size.

    TF Serving's REST API (``backend.ModelServerClient``) unless the spec says ``protocol = "grpc"``
    (``grpc_transport.GrpcTransport``, imported only then).
    """
    if spec.protocol == PROTOCOL_GRPC:
        from flask_server.grpc_transport import GrpcTransport

        return GrpcTransport.from_config(spec.model_server_url, config)
    return ModelServerClient.from_config(spec.model_server_url, config)


class ModelRegistry:
    """Route name -> ServedModel, one transport (connection pool) per model server, and the limits
    the views need.

    ``open_transport`` builds a model server's transport the first time a spec names it; pass
    another to serve models over another transport (it must implement ``ModelServerTransport``).
    ``cache`` (GATEWAY_CACHE; None: off) is shared by every model, each under its own keys.
    """

    def __init__(self, specs: Mapping[str, ModelSpec], config: GatewayConfig,
                 open_transport: Callable[[ModelSpec, GatewayConfig], ModelServerTransport] = open_transport,
                 cache: ResponseCache | None = None) -> None:
        #: How many images one request may carry (GATEWAY_MAX_BATCH_SIZE).
        self.max_batch_size = config.max_batch_size
        # Held while an image is decoded and preprocessed (GATEWAY_DECODE_CONCURRENCY slots),
        # shared by every model: decoding is what the process's cores are spent on.
        decode_slots = threading.BoundedSemaphore(config.decode_concurrency)
        #: Model server URL -> its transport.
        self.clients: dict[str, ModelServerTransport] = {}
        self.models: dict[str, ServedModel] = {}
        labels_cache: dict[str, list[Label]] = {}
        for route, spec in specs.items():
            if spec.labels not in labels_cache:
                try:
                    labels_cache[spec.labels] = load_labels(spec.labels)
                except LabelsError as exc:
                    raise ConfigError(f"models.{route}.labels: {exc}") from exc
            if spec.model_server_url not in self.clients:
                self.clients[spec.model_server_url] = open_transport(spec, config)
            self.models[route] = ServedModel(spec, labels_cache[spec.labels], self.clients[spec.model_server_url],
                                             config.max_image_pixels, decode_slots, cache)

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
    """Load the model specs and labels and attach the registry to ``app``, with the response cache
    ``response_cache.init_app`` opened (call that first). Raises ConfigError."""
    app.extensions[_EXTENSION_KEY] = ModelRegistry(load_model_specs(config), config,
                                                   cache=response_cache.get_cache(app))


def get_registry() -> ModelRegistry:
    """The current app's ModelRegistry."""
    return current_app.extensions[_EXTENSION_KEY]


def get_model(route: str) -> ServedModel:
    """The model served at ``route`` in the current app; raises ModelNotFound (404)."""
    return get_registry().get(route)
