"""Prometheus metrics at ``GET /metrics``.

| metric | type | labels |
|---|---|---|
| gateway_requests_total | counter | model, route, status |
| gateway_request_duration_seconds | histogram | model, route |
| gateway_backend_request_duration_seconds | histogram | model |
| gateway_request_size_bytes | histogram | route |
| gateway_response_size_bytes | histogram | route |
| gateway_requests_in_flight | gauge | (none) |
| gateway_cache_requests_total | counter | model, result (`hit` or `miss`) |
| gateway_cache_errors_total | counter | (none) |

``route`` is the URL rule (``/v1/models/<model>/predict``), never the raw path, and ``model`` is the
model that served the request (empty for errors before one was chosen), so label values stay bounded
whatever clients send. The backend client reports its calls with ``backend_timer(model)`` or
``observe_backend_call(model, seconds)``. With a response cache (``GATEWAY_CACHE``), every answered
prediction counts as a cache ``hit`` or ``miss`` (``g.cache_result``, set through ``response_cache.record_result``), and
``observe_cache_error()`` counts reads and writes the cache's storage failed.

Each app gets its own ``CollectorRegistry`` (tests build many apps). Under gunicorn with several
workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start: values then
go to files there and ``/metrics`` sums all workers. The directory must be emptied before gunicorn
starts (a fresh ``emptyDir`` / tmpfs, or ``on_starting`` in the gunicorn config), and the gunicorn
config must call ``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` in ``child_exit``
(``flask_server/gunicorn.conf.py`` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, current_app, g, has_app_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from flask_server.config import GatewayConfig
from flask_server.request_log import request_latency, request_start_time, response_model, response_size

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION_KEY = "gateway_metrics"
UNMATCHED_ROUTE = "<unmatched>"
#: Attribute of ``g`` where response_cache.record_result puts a prediction's ``hit`` or ``miss``.
CACHE_RESULT_ATTR = "cache_result"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


@dataclasses.dataclass(frozen=True)
class GatewayMetrics:
    """The gateway's metric objects, all in one registry."""

    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    backend_duration: Histogram
    request_size: Histogram
    response_size: Histogram
    in_flight: Gauge
    cache_requests: Counter
    cache_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        """Create and register every metric in ``registry``."""
        return cls(
            registry=registry,
            requests=Counter("gateway_requests_total", "Requests answered, by model, route and status.",
                             ("model", "route", "status"), registry=registry),
            request_duration=Histogram("gateway_request_duration_seconds",
                                       "Time from the first gateway hook to the response, whole request.",
                                       ("model", "route"), buckets=LATENCY_BUCKETS, registry=registry),
            backend_duration=Histogram("gateway_backend_request_duration_seconds",
                                       "Time spent waiting on the model server per call.",
                                       ("model",), buckets=LATENCY_BUCKETS, registry=registry),
            request_size=Histogram("gateway_request_size_bytes", "Request body size.",
                                   ("route",), buckets=SIZE_BUCKETS, registry=registry),
            response_size=Histogram("gateway_response_size_bytes", "Response body size.",
                                    ("route",), buckets=SIZE_BUCKETS, registry=registry),
            # livesum: the sum over the workers that are alive, not over every pid ever seen.
            in_flight=Gauge("gateway_requests_in_flight", "Requests being handled now.",
                            registry=registry, multiprocess_mode="livesum"),
            cache_requests=Counter("gateway_cache_requests_total",
                                   "Predictions answered from the response cache (hit) or the model server (miss).",
                                   ("model", "result"), registry=registry),
            cache_errors=Counter("gateway_cache_errors_total",
                                 "Response cache reads and writes that failed (answered without the cache).",
                                 registry=registry),
        )


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, if that mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def _current_metrics() -> GatewayMetrics | None:
    """The current app's metrics; None outside an app context or in an app without them."""
    return current_app.extensions.get(EXTENSION_KEY) if has_app_context() else None


def observe_backend_call(model: str, seconds: float) -> None:
    """Record one model-server call of ``seconds``; does nothing outside an app with metrics."""
    metrics = _current_metrics()
    if metrics is not None:
        metrics.backend_duration.labels(model=model).observe(seconds)


def observe_cache_error() -> None:
    """Count one failed response cache operation; does nothing outside an app with metrics."""
    metrics = _current_metrics()
    if metrics is not None:
        metrics.cache_errors.inc()


@contextlib.contextmanager
def backend_timer(model: str) -> Iterator[None]:
    """Time the block as one model-server call of ``model`` (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_backend_call(model, time.perf_counter() - started)


def _route() -> str:
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE


def render(metrics: GatewayMetrics) -> Response:
    """The Prometheus text exposition of this process, or of every worker in multiprocess mode."""
    directory = multiprocess_dir()
    registry = metrics.registry
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def init_app(app: Flask, config: GatewayConfig) -> None:
    """Count and time every request and serve ``GET /metrics``."""
    metrics = GatewayMetrics.create(CollectorRegistry(auto_describe=True))
    app.extensions[EXTENSION_KEY] = metrics

    @app.before_request
    def _enter() -> None:
        request_start_time()
        metrics.in_flight.inc()
        g.metrics_in_flight = True

    @app.after_request
    def _observe(response: Response) -> Response:
        route = _route()
        model = response_model(response)[0] or ""
        metrics.requests.labels(model=model, route=route, status=str(response.status_code)).inc()
        metrics.request_duration.labels(model=model, route=route).observe(request_latency())
        metrics.request_size.labels(route=route).observe(request.content_length or 0)
        metrics.response_size.labels(route=route).observe(response_size(response))
        cache_result = g.get(CACHE_RESULT_ATTR)
        if cache_result:
            metrics.cache_requests.labels(model=model, result=cache_result).inc()
        return response

    @app.teardown_request
    def _leave(_exc: BaseException | None) -> None:
        # teardown runs even when a hook raised, so the gauge cannot drift upwards.
        if g.pop("metrics_in_flight", False):
            metrics.in_flight.dec()

    app.add_url_rule(METRICS_PATH, "metrics", lambda: render(metrics), methods=["GET"])
