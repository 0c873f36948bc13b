"""Wires the model server together: config -> repository + version manager -> runner -> REST server.

Start-up follows tensorflow_model_server: validate the configuration, load the initial versions
and wait until every model has one AVAILABLE (failing if one cannot), then export the REST API.
Shutdown stops accepting, lets in-flight requests finish (bounded), then stops the pollers.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from model_server.batching import BatchScheduler
from model_server.config import (ConfigError, ServerConfig, load_batching_config, load_model_configs,
                                 load_monitoring_config, parse_model_config_text, validate_model_configs)
from model_server.monitoring import Metrics
from model_server.repository import ModelRepository, ServableHandle
from model_server.rest_server import RestApi, RestServer
from model_server.servable import Servable, load_servable, session_config
from model_server.versions import VersionManager

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0       # in-flight requests get this long after SIGTERM
UNLOAD_WAIT_S = 60.0          # an old version waits this long for its in-flight requests


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
        self._stop_requested = threading.Event()
        self._config_poller: threading.Thread | None = None

    # -- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the initial models, then start serving. Raises ConfigError when it cannot."""
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
            # ServerCore::WaitUntilModelsAvailable's message; main() prints it and exits.
            details = "".join(f"{{{{name: {name} version: {version}}} due to error: {code}: {message}}}, "
                              for name in failed for version, code, message in self.manager.failed_versions(name))
            raise ConfigError(f"{len(failed)} model(s) did not become available: {{{details}}}", "UNKNOWN")
        self._start_rest()
        self._start_config_poller()

    def _start_rest(self) -> None:
        config = self.config
        if config.port:
            log.info("gRPC is not served by this server: --port=%d is accepted for compatibility and not bound.",
                     config.port)
        if not config.rest_api_port:
            log.warning("HTTP/REST API disabled (--rest_api_port=0): nothing will be served.")
            return
        if config.rest_api_port == config.port:
            log.error("server_options.http_port cannot be same as grpc_port. Please use a different port for "
                      "HTTP/REST API. Skipped exporting HTTP/REST API.")
            return
        api = RestApi(self.repository, self._submit, config.rest_api_timeout_in_ms / 1000)
        self._rest = RestServer(config.rest_api_host, config.rest_api_port, api, self.metrics,
                                self.monitoring.prometheus_path)
        self._rest.start()
        host, port = self._rest.address[:2]
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
            if models != self.models:
                log.info("Model config file changed; now serving: %s", ", ".join(m.name for m in models))
                self.models = models
                self.manager.set_models(models)

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
        if self._rest is not None:
            if not self._rest.shutdown(SHUTDOWN_GRACE_S):
                log.warning("Requests still running after %.0f s; exiting anyway", SHUTDOWN_GRACE_S)
        if self._scheduler is not None:
            self._scheduler.stop()
        self.manager.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("Model server stopped.")


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
