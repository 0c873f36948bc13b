"""The batch scheduler on its own (no TensorFlow), plus one end-to-end run with --enable_batching."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from model_server.batching import BatchScheduler, merge_inputs
from model_server.config import BatchingConfig
from model_server.errors import InvalidArgument, Unavailable
from tests.model_server.conftest import TINY_INPUT


class RecordingModel:
    """Doubles its input; remembers the batch sizes it saw; can be held back with ``gate``."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs):
        self.gate.wait(10)
        self.batch_sizes.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}


@pytest.fixture
def make_scheduler():
    schedulers = []

    def make(on_batch=None, **options):
        scheduler = BatchScheduler(BatchingConfig(**{"num_batch_threads": 1, **options}), on_batch)
        scheduler.start()
        schedulers.append(scheduler)
        return scheduler

    yield make
    for scheduler in schedulers:
        scheduler.stop(timeout=5)


def rows(*values):
    return {"x": np.array(values, dtype=np.float32)}


def test_concurrent_tasks_share_one_batch_and_get_their_own_rows(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=8, batch_timeout_micros=200_000)
    futures = [scheduler.submit("k", rows(i, i + 0.5), model) for i in range(4)]
    results = [f.result(5) for f in futures]
    assert model.batch_sizes == [8]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2 * i, 2 * i + 1])


def test_a_lone_task_runs_after_the_timeout(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=8, batch_timeout_micros=50_000)
    started = time.monotonic()
    assert scheduler.submit("k", rows(1), model).result(5)["y"].tolist() == [2]
    assert 0.04 <= time.monotonic() - started < 1.0


def test_zero_timeout_runs_at_once_and_batches_what_arrives_while_busy(make_scheduler):
    """batch_timeout_micros 0: no wait when idle; tasks that arrive during a run form the next batch."""
    model = RecordingModel()
    seen = []
    scheduler = make_scheduler(lambda padded, sizes, waits: seen.append((padded, sizes)), max_batch_size=8,
                               batch_timeout_micros=0)
    started = time.monotonic()
    assert scheduler.submit("k", rows(1), model).result(5)["y"].tolist() == [2]
    assert time.monotonic() - started < 0.5
    model.gate.clear()
    first = scheduler.submit("k", rows(1), model)
    wait_until_true(lambda: len(seen) == 2)  # the first task is running, held by the gate
    later = [scheduler.submit("k", rows(i), model) for i in range(3)]
    model.gate.set()
    assert [f.result(5)["y"].tolist() for f in later] == [[0], [2], [4]]
    first.result(5)
    assert model.batch_sizes == [1, 1, 3]
    assert seen == [(1, [1]), (1, [1]), (3, [1, 1, 1])]


def wait_until_true(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_full_batches_run_without_waiting_for_the_timeout(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=2, batch_timeout_micros=10_000_000)
    started = time.monotonic()
    assert scheduler.submit("k", rows(1, 2), model).result(5)["y"].tolist() == [2, 4]
    assert time.monotonic() - started < 1.0


def test_keys_are_batched_separately(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=4, batch_timeout_micros=100_000)
    a, b = scheduler.submit("a", rows(1), model), scheduler.submit("b", rows(2), model)
    assert (a.result(5)["y"].tolist(), b.result(5)["y"].tolist()) == ([2], [4])
    assert sorted(model.batch_sizes) == [1, 1]


def test_full_queue_is_rejected_at_once(make_scheduler):
    model = RecordingModel()
    model.gate.clear()  # the one worker blocks on the first batch
    scheduler = make_scheduler(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=2)
    first = scheduler.submit("k", rows(0), model)
    time.sleep(0.1)  # the worker took it
    queued = [scheduler.submit("k", rows(i), model) for i in (1, 2)]
    started = time.monotonic()
    with pytest.raises(Unavailable, match="batch scheduling queue .* is full"):
        scheduler.submit("k", rows(3), model)
    assert time.monotonic() - started < 0.1
    model.gate.set()
    assert [f.result(5)["y"].tolist() for f in (first, *queued)] == [[0], [2], [4]]


def test_task_larger_than_max_batch_size_is_rejected(make_scheduler):
    scheduler = make_scheduler(max_batch_size=2)
    with pytest.raises(InvalidArgument, match="Task size 3 is larger than maximum input batch size 2"):
        scheduler.submit("k", rows(1, 2, 3), RecordingModel())


def test_allowed_batch_sizes_pad_and_padding_is_dropped(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=4, batch_timeout_micros=0, allowed_batch_sizes=(2, 4))
    assert scheduler.submit("k", rows(5, 6, 7), model).result(5)["y"].tolist() == [10, 12, 14]
    assert model.batch_sizes == [4]


def test_a_failing_batch_fails_every_caller(make_scheduler):
    def broken(_inputs):
        raise InvalidArgument("boom")

    scheduler = make_scheduler(max_batch_size=4, batch_timeout_micros=100_000)
    futures = [scheduler.submit("k", rows(i), broken) for i in range(3)]
    for future in futures:
        with pytest.raises(InvalidArgument, match="boom"):
            future.result(5)


def test_variable_length_inputs_need_padding_enabled():
    tasks = [{"x": np.ones((1, 2))}, {"x": np.ones((1, 3))}]
    with pytest.raises(InvalidArgument, match="different shapes and padding is turned off"):
        merge_inputs(tasks, pad_variable_length=False, padded_size=2)
    merged = merge_inputs(tasks, pad_variable_length=True, padded_size=2)["x"]
    assert merged.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_stop_runs_what_is_queued(make_scheduler):
    model = RecordingModel()
    scheduler = make_scheduler(max_batch_size=8, batch_timeout_micros=10_000_000)
    future = scheduler.submit("k", rows(1), model)
    scheduler.stop(timeout=5)
    assert future.result(1)["y"].tolist() == [2]
    with pytest.raises(Unavailable):
        scheduler.submit("k", rows(1), model)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_batching_end_to_end(model_paths, tmp_path, model_server_factory):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n"
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n")
    images = np.random.default_rng(2).random((8, 1, *TINY_INPUT, 3), dtype=np.float32)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    args = ["--enable_batching", f"--batching_parameters_file={params}", "--rest_api_host=127.0.0.1",
            f"--monitoring_config_file={monitoring}"]
    with model_server_factory(model_name="tiny", model_base_path=model_paths["tiny"], extra_args=args) as server:
        url = server.url + "/v1/models/tiny/versions/2:predict"

        def call(image):
            response = requests.post(url, json={"instances": image.tolist()}, timeout=30)
            assert response.status_code == 200, response.text
            return np.array(response.json()["predictions"])

        alone = [call(image) for image in images[:2]]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(call, images))
        for single, batched in zip(alone, together):
            np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-7)
        assert len({tuple(np.round(p[0], 6)) for p in together}) == 8
        page = requests.get(server.url + "/monitoring/prometheus/metrics", timeout=10).text
    prefix = ":tensorflow:serving:batching_session:"
    assert sample(page, prefix + "input_batch_size_count") == 10  # every task, alone or together
    assert sample(page, prefix + "input_batch_size_sum") == 10
    batches = sample(page, prefix + "processed_batch_size_count")
    assert sample(page, prefix + "processed_batch_size_sum") == 10 and batches < 10  # some shared a batch
    assert sample(page, prefix + "queuing_latency_count", thread_pool_name="batch_threads") == 10


def sample(page: str, name: str, **labels) -> float:
    """The value of one Prometheus sample (all its labels given) in a text exposition page."""
    for line in page.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric.split("{")[0] == name and all(f'{k}="{v}"' in metric for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"{name} {labels} not in the metrics page")
