"""Prometheus metrics named like TF Serving's (``:tensorflow:serving:request_count`` ...).

TF Serving exports its monitoring counters as ``:tensorflow:serving:<name>``. We keep those names
and label names and add a ``version`` label so a hot swap is visible per version, and give the
request count the ``API`` and ``entrypoint`` (``REST`` / ``GRPC``) labels of the latency metric.
Two deviations forced by prometheus-client: counters get the standard ``_total`` suffix, and histograms also
export ``_created`` samples. Latencies are in microseconds like TF Serving's.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

# TF Serving's request_latency buckets: exponential from 10 µs, factor 1.8, 33 buckets (~ 2.9e9 µs).
_LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))
ENTRYPOINT_REST = "REST"
ENTRYPOINT_GRPC = "GRPC"
# batching_util.h: exponential [1*2^0, ..., 1*2^13]; batching_session.cc: 100 µs x 1.2^i, 52 buckets.
_BATCH_SIZE_BUCKETS = tuple(2.0 ** i for i in range(14))
_QUEUING_BUCKETS_US = tuple(100 * 1.2 ** i for i in range(52))
BATCH_THREAD_POOL = "batch_threads"  # our one shared pool (TF Serving names it after the model config)


class Metrics:
    """The server's metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "version", "API", "status", "entrypoint"], registry=self.registry)
        self._request_latency = Histogram(
            ":tensorflow:serving:request_latency", "Distribution of wall time (in microseconds) for "
            "Tensorflow Serving request.", ["model_name", "version", "API", "entrypoint"],
            buckets=_LATENCY_BUCKETS_US, registry=self.registry)
        # TF Serving's batching_session metrics (batching_util.h, batching_session.cc), same buckets.
        self._processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing.", buckets=_BATCH_SIZE_BUCKETS, registry=self.registry)
        self._input_batch_size = Histogram(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Tracks the batch size distribution on the inputs.", buckets=_BATCH_SIZE_BUCKETS, registry=self.registry)
        self._queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing", ["thread_pool_name"],
            buckets=_QUEUING_BUCKETS_US, registry=self.registry)
        self._load_latency = Histogram(
            ":tensorflow:cc:saved_model:load_latency_by_stage", "Distribution of wall time (in microseconds) "
            "spent loading and warming up a SavedModel version.", ["model_path", "stage"],
            buckets=_LATENCY_BUCKETS_US, registry=self.registry)

    def record_batch(self, processed_size: int, task_sizes: list[int], queuing_seconds: list[float]) -> None:
        """One batch run by the batch scheduler: its size after padding, and each task's size and wait."""
        self._processed_batch_size.observe(processed_size)
        for size, waited in zip(task_sizes, queuing_seconds):
            self._input_batch_size.observe(size)
            self._queuing_latency.labels(BATCH_THREAD_POOL).observe(waited * 1e6)

    def record_request(self, model_name: str, version: str, api: str, status: str, seconds: float,
                       entrypoint: str = ENTRYPOINT_REST) -> None:
        """Count one REST or gRPC request; latency is recorded for successful ones (as TF Serving does)."""
        self._request_count.labels(model_name, version, api, status, entrypoint).inc()
        if status == "OK":
            self._request_latency.labels(model_name, version, api, entrypoint).observe(seconds * 1e6)

    def record_load(self, model_path: str, seconds: float) -> None:
        """Record the wall time of one successful load + warm-up."""
        self._load_latency.labels(model_path, "total").observe(seconds * 1e6)

    def render(self) -> tuple[bytes, str]:
        """The text exposition page and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
