"""Wires the model server together: config -> repository + version manager -> runner -> gRPC and REST.

Start-up follows tensorflow_model_server: validate the configuration, load the initial versions
and wait until every model has one AVAILABLE (failing if one cannot), then start the gRPC server
(``--port``, ``--grpc_socket_path``) and export the REST API (TF Serving's /v1 and the Open Inference
Protocol's /v2, on one port). Both fronts share one repository, one version manager and one
batching queue. Shutdown stops accepting on both, lets in-flight requests finish (bounded), then
stops the pollers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from model_server.batching import BatchScheduler
from model_server.config import (BindError, ConfigError, ModelConfig, ServerConfig, load_batching_config,
                                 load_model_configs, load_monitoring_config, parse_channel_arguments,
                                 parse_model_config_text, validate_model_configs)
from model_server.errors import Unknown, error_for_code
from model_server.monitoring import Metrics
from model_server.repository import ModelRepository, ServableHandle
from model_server.rest_server import RestApi, RestServer
from model_server.servable import Servable, load_servable, session_config
from model_server.v2_api import V2Api, V2DataPlane
from model_server.versions import VersionManager
from serving_contract.ports import reserve_port

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0       # in-flight requests get this long after SIGTERM
UNLOAD_WAIT_S = 60.0          # an old version waits this long for its in-flight requests
RELOAD_WAIT_S = 300.0         # a config reload waits this long for its new models to load
GRPC_PACKAGE_HINT = ("gRPC needs the tensorflow-serving-api protos: pip install --no-deps "
                     "tensorflow-serving-api (see requirements.txt), or pass --port=0 to serve REST only")


class ModelServer:
    """A running model server; ``start`` then ``wait_for_stop`` then ``shutdown``."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.models = load_model_configs(config)
        self.batching = load_batching_config(config)
        self.monitoring = load_monitoring_config(config)
        self.repository = ModelRepository()
        self.metrics = Metrics() if self.monitoring.prometheus_enabled else None
        self.manager = VersionManager(
            self.repository, self._load, Servable.close,
            poll_wait_seconds=config.file_system_poll_wait_seconds,
            max_load_retries=config.max_num_load_retries,
            load_retry_interval_s=config.load_retry_interval_micros / 1e6,
            unload_wait_s=UNLOAD_WAIT_S)
        self._executor = ThreadPoolExecutor(max_workers=max(config.rest_api_num_threads, 1),
                                            thread_name_prefix="model-call")
        self._scheduler = (BatchScheduler(self.batching, self.metrics.record_batch if self.metrics else None)
                           if self.batching else None)
        self._session_config = session_config(config.tensorflow_intra_op_parallelism,
                                              config.tensorflow_inter_op_parallelism)
        self._rest: RestServer | None = None
        #: The Open Inference Protocol (KServe v2), on the REST port and, when its protos are installed, gRPC.
        self.v2 = V2DataPlane(self.repository, self._submit)
        self._grpc = None  # GrpcServer, imported only when gRPC is on (it needs tensorflow-serving-api)
        self._grpc_reservation: socket.socket | None = None  # holds --port from start-up until gRPC serves
        self._models_lock = threading.Lock()  # config reloads: the file poller and the gRPC ModelService
        self._stop_requested = threading.Event()
        self._config_poller: threading.Thread | None = None

    # -- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the ports, load the initial models, then start serving. Raises ConfigError when it cannot.

        Binding comes first, before TensorFlow is even imported: a busy port fails (BindError) in
        well under a second instead of after a model load of many seconds. Until the models are
        loaded both ports are bound but not listening, so clients are refused rather than queued.
        """
        self._bind_rest()
        self._reserve_grpc_port()
        _configure_tensorflow(self.config)
        if self._scheduler:
            self._scheduler.start()
        self.manager.set_models(self.models)
        self.manager.start()
        outcome = self.manager.wait_until_settled()
        if self._stop_requested.is_set():
            return
        failed = sorted(name for name, state in outcome.items() if state == "failed")
        if failed:
            raise ConfigError(self._unavailable_message(failed), "UNKNOWN")
        self._start_grpc()
        self._start_rest()
        self._start_config_poller()

    def _reserve_grpc_port(self) -> None:
        # Only reserved here: grpc listens as soon as it binds, and a listening port that does not
        # serve yet would leave clients waiting for their deadline instead of refused at once.
        config = self.config
        if not config.port:
            return
        try:
            self._grpc_reservation = reserve_port(config.rest_api_host, config.port)
        except OSError as exc:
            raise BindError(f"Failed to BuildAndStart gRPC server: cannot listen on "
                            f"{config.rest_api_host}:{config.port}: {exc.strerror or exc}", "UNAVAILABLE") from exc

    def _start_grpc(self) -> None:
        config = self.config
        addresses = [f"{config.rest_api_host}:{config.port}"] if config.port else []
        if config.grpc_socket_path:
            addresses.append(f"unix:{config.grpc_socket_path}")
        if not addresses:
            log.info("gRPC API disabled (--port=0 and no --grpc_socket_path).")
            return
        try:
            from model_server.grpc_api import GrpcApi
            from model_server.grpc_server import GrpcServer
        except ImportError as exc:
            raise ConfigError(f"{GRPC_PACKAGE_HINT} ({exc})", "FAILED_PRECONDITION") from exc
        self._release_grpc_port()
        api = GrpcApi(self.repository, self._submit, self.reload_config, config.enable_serialization_as_tensor_content)
        self._grpc = GrpcServer(api, addresses, config.grpc_max_threads,
                                parse_channel_arguments(config.grpc_channel_arguments), self.metrics,
                                self._v2_grpc_services())
        self._grpc.start()
        if config.port:
            log.info("Running gRPC ModelServer at %s:%d ...", config.rest_api_host, self._grpc.ports[0])
        if config.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", config.grpc_socket_path)

    def _v2_grpc_services(self) -> list[Callable[[Any], None]]:
        """The v2 gRPC service for the gRPC server, if its protos (the tritonclient package) are installed."""
        try:
            from model_server import v2_grpc
        except ImportError as exc:
            log.info("The v2 gRPC service (inference.GRPCInferenceService) is not served: it needs the "
                     "tritonclient package's protos (%s).", exc)
            return []
        return [partial(v2_grpc.add_to_server, dataplane=self.v2)]

    def _release_grpc_port(self) -> None:
        if self._grpc_reservation is not None:
            self._grpc_reservation.close()
            self._grpc_reservation = None

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC TCP port (useful with --port=0 in tests), or None when gRPC is off."""
        return self._grpc.ports[0] if self._grpc is not None and self.config.port else None

    def _bind_rest(self) -> None:
        config = self.config
        if not config.rest_api_port:
            log.warning("HTTP/REST API disabled (--rest_api_port=0): nothing will be served.")
            return
        if config.rest_api_port == config.port:
            log.error("server_options.http_port cannot be same as grpc_port. Please use a different port for "
                      "HTTP/REST API. Skipped exporting HTTP/REST API.")
            return
        timeout_s = config.rest_api_timeout_in_ms / 1000
        api = RestApi(self.repository, self._submit, timeout_s)
        v2_api = V2Api(self.v2, timeout_s)
        address = f"{config.rest_api_host}:{config.rest_api_port}"
        try:
            self._rest = RestServer(config.rest_api_host, config.rest_api_port, api, self.metrics,
                                    self.monitoring.prometheus_path, v2_api)
        except OSError as exc:
            raise BindError(_bind_failure(address, exc)) from exc

    def _start_rest(self) -> None:
        if self._rest is None:
            return
        host, port = self._rest.address[:2]
        try:
            self._rest.start()
        except OSError as exc:  # another process bound the port with SO_REUSEADDR and listened first
            raise BindError(_bind_failure(f"{host}:{port}", exc)) from exc
        log.info("Exporting HTTP/REST API at:%s:%d ...", host, port)

    def _start_config_poller(self) -> None:
        if self.config.model_config_file and self.config.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config_file, name="config-poller", daemon=True)
            self._config_poller.start()

    def _poll_config_file(self) -> None:
        while not self._stop_requested.wait(self.config.model_config_file_poll_wait_seconds):
            try:
                models = parse_model_config_text(self.config.model_config_file)
                validate_model_configs(models)
            except ConfigError as exc:
                log.error("Failed to read ModelServerConfig file: %s", exc)
                continue
            with self._models_lock:
                if models != self.models:
                    log.info("Model config file changed; now serving: %s", ", ".join(m.name for m in models))
                    self.models = models
                    self.manager.set_models(models)

    def reload_config(self, models: list[ModelConfig], timeout_s: float | None = None) -> None:
        """Serve exactly ``models`` (ModelService.HandleReloadConfigRequest), like ServerCore::ReloadConfig.

        Loads the new models and unloads removed ones, then waits (up to ``timeout_s``, the caller's
        deadline, and RELOAD_WAIT_S) until every model has a version AVAILABLE. Raises the
        ServingError TF Serving would answer with.
        """
        try:
            validate_model_configs(models)
        except ConfigError as exc:
            raise error_for_code(exc.code, exc.message) from None
        with self._models_lock:
            log.info("Reloading the model config; now serving: %s", ", ".join(m.name for m in models) or "nothing")
            self.models = models
            self.manager.set_models(models)
            # None: the caller set no deadline. A deadline already passed (0 s) must not become the full wait.
            wait_s = RELOAD_WAIT_S if timeout_s is None else max(0.0, min(timeout_s, RELOAD_WAIT_S))
            outcome = self.manager.wait_until_settled(wait_s)
        missing = sorted(name for name, state in outcome.items() if state != "available")
        if missing:
            raise Unknown(self._unavailable_message(missing))

    def _unavailable_message(self, names: list[str]) -> str:
        """ServerCore::WaitUntilModelsAvailable's error (start-up and config reloads): each version that
        did not become available, with its load error where it has one."""
        details = ""
        for name in names:
            failed = self.manager.failed_versions(name)
            details += "".join(f"{{{{name: {name} version: {version}}} due to error: {code}: {message}}}, "
                               for version, code, message in failed) or f"{{{{name: {name}}}}}, "
        return f"{len(names)} model(s) did not become available: {{{details}}}"

    # -- model calls ----------------------------------------------------------------------------

    def _load(self, name: str, version: int, path: Path) -> Servable:
        started = time.monotonic()
        tags = tuple(t.strip() for t in self.config.saved_model_tags.split(",") if t.strip())
        servable = load_servable(name, version, path, tags, warm_up=self.config.enable_model_warmup,
                                 config=self._session_config)
        if self.metrics is not None:
            self.metrics.record_load(str(path), time.monotonic() - started)
        return servable

    def _submit(self, handle: ServableHandle, signature: str, tensors: dict[str, np.ndarray]) -> Future:
        run = partial(handle.servable.run, signature)
        if self._scheduler is not None:
            return self._scheduler.submit((handle.name, handle.version, signature), tensors, run)
        return self._executor.submit(run, tensors)

    # -- shutdown -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the server to stop (safe from a signal handler)."""
        self._stop_requested.set()
        self.manager.request_stop()

    def wait_for_stop(self) -> None:
        """Block until ``request_stop``."""
        while not self._stop_requested.wait(1.0):
            pass

    def shutdown(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), stop background work."""
        self._release_grpc_port()
        grpc_done = self._grpc.stop(SHUTDOWN_GRACE_S) if self._grpc is not None else None
        if self._rest is not None:
            if not self._rest.shutdown(SHUTDOWN_GRACE_S):
                log.warning("Requests still running after %.0f s; exiting anyway", SHUTDOWN_GRACE_S)
        if grpc_done is not None and not grpc_done.wait(SHUTDOWN_GRACE_S):
            log.warning("gRPC calls still running after %.0f s; exiting anyway", SHUTDOWN_GRACE_S)
        if self._scheduler is not None:
            self._scheduler.stop()
        self.manager.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("Model server stopped.")


def _bind_failure(address: str, exc: OSError) -> str:
    """TF Serving's words for a server it could not start, with the operating system's reason."""
    return f"Failed to start HTTP Server at {address}: {exc.strerror or exc}"


def _configure_tensorflow(config: ServerConfig) -> None:
    import tensorflow as tf

    if config.tensorflow_intra_op_parallelism > 0:
        tf.config.threading.set_intra_op_parallelism_threads(config.tensorflow_intra_op_parallelism)
    if config.tensorflow_inter_op_parallelism > 0:
        tf.config.threading.set_inter_op_parallelism_threads(config.tensorflow_inter_op_parallelism)
    # Each version's Session gets the same numbers in its ConfigProto (servable.session_config); these
    # cover the eager work (reading warm-up files). Read back, so the log shows what TF will use (0 = per core).
    log.info("TensorFlow threads: intra-op %d, inter-op %d", tf.config.threading.get_intra_op_parallelism_threads(),
             tf.config.threading.get_inter_op_parallelism_threads())
