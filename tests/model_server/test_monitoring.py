"""model_server/monitoring.py: TF Serving's metric names, labels and units, in a registry per server."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_server.monitoring import BATCH_THREAD_POOL, ENTRYPOINT_REST, Metrics

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCHING = ":tensorflow:serving:batching_session:"


def samples(metrics: Metrics) -> list:
    """Every sample of the rendered page, parsed back with prometheus-client's own parser."""
    page, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return [sample for family in text_string_to_metric_families(page.decode()) for sample in family.samples]


def value(metrics: Metrics, name: str, **labels) -> float:
    found = [s.value for s in samples(metrics) if s.name == name and all(s.labels.get(k) == v
                                                                            for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_requests_are_counted_by_model_version_api_and_status():
    metrics = Metrics()
    metrics.record_request("m", "1", "predict", "OK", 0.002)
    metrics.record_request("m", "1", "predict", "OK", 0.004)
    metrics.record_request("m", "", "predict", "NOT_FOUND", 0.001)
    assert value(metrics, REQUEST_COUNT + "_total", model_name="m", version="1", API="predict", status="OK") == 2
    assert value(metrics, REQUEST_COUNT + "_total", model_name="m", version="", status="NOT_FOUND") == 1


def test_latency_is_in_microseconds_and_only_for_successes():
    metrics = Metrics()
    metrics.record_request("m", "1", "predict", "OK", 0.002)
    metrics.record_request("m", "1", "predict", "OK", 0.004)
    metrics.record_request("m", "1", "predict", "INVALID_ARGUMENT", 5.0)
    labels = dict(model_name="m", version="1", API="predict", entrypoint=ENTRYPOINT_REST)
    assert value(metrics, REQUEST_LATENCY + "_count", **labels) == 2
    assert value(metrics, REQUEST_LATENCY + "_sum", **labels) == pytest.approx(6000)


def test_latency_buckets_are_tf_servings():
    # 10 us x 1.8^i, 33 buckets (monitoring in TF Serving's server_core), plus +Inf
    metrics = Metrics()
    metrics.record_request("m", "1", "predict", "OK", 0.0)
    bounds = [float(s.labels["le"]) for s in samples(metrics) if s.name == REQUEST_LATENCY + "_bucket"]
    assert len(bounds) == 34 and bounds[-1] == float("inf")
    assert bounds[:3] == pytest.approx([10, 18, 32.4]) and bounds[32] == pytest.approx(10 * 1.8 ** 32)


def test_a_batch_records_its_size_and_each_tasks_size_and_wait():
    metrics = Metrics()
    metrics.record_batch(8, [3, 5], [0.001, 0.002])
    assert value(metrics, BATCHING + "processed_batch_size_count") == 1
    assert value(metrics, BATCHING + "processed_batch_size_sum") == 8
    assert value(metrics, BATCHING + "input_batch_size_count") == 2
    assert value(metrics, BATCHING + "input_batch_size_sum") == 8
    assert value(metrics, BATCHING + "queuing_latency_sum", thread_pool_name=BATCH_THREAD_POOL) == \
        pytest.approx(3000)


def test_load_latency_per_model_path():
    metrics = Metrics()
    metrics.record_load("/models/m/1", 1.5)
    assert value(metrics, ":tensorflow:cc:saved_model:load_latency_by_stage_sum", model_path="/models/m/1",
                 stage="total") == pytest.approx(1.5e6)


def test_two_servers_do_not_share_counters():
    first, second = Metrics(), Metrics()
    first.record_request("m", "1", "predict", "OK", 0.001)
    assert not [s for s in samples(second) if s.name == REQUEST_COUNT + "_total"]
