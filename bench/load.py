"""Closed-loop load generation: N client threads, each with its own keep-alive session.

Every request is checked (status and body); a failed check counts as an error and its latency is
not recorded. The run stops after a fixed number of requests or a time bound, whichever comes first.

Throughput is counted while all N clients are busy (until the first client runs out of work): the
drain at the end, when fewer and fewer requests are in flight, would otherwise dominate short runs
(64 requests at 16 clients is only four rounds) and understate what the server sustains.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable

import requests

from bench.stats import percentile

# A request function: sends request number ``i`` with ``session``, raises on any bad response. It may
# return its own latency in seconds (the bare model times itself, without the pipe to it).
Send = Callable[[requests.Session, int], "float | None"]


@dataclasses.dataclass
class LoadResult:
    """What one load run measured."""

    clients: int
    latencies: list[float]
    errors: int
    wall_s: float
    error_samples: list[str]
    steady_ok: int = 0  # requests completed while every client was still busy
    steady_s: float = 0.0  # from the start until the first client ran out of work

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful requests per second while all clients were busy (the whole run if too short)."""
        if self.steady_ok >= self.clients and self.steady_s > 0:
            return self.steady_ok / self.steady_s
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def p(self, pct: float) -> float:
        """Latency percentile in milliseconds."""
        return 1000 * percentile(self.latencies, pct)

    @classmethod
    def combine(cls, parts: list[LoadResult]) -> LoadResult:
        """One result from several runs at the same concurrency (e.g. the two halves of an ABBA order)."""
        return cls(parts[0].clients, [lat for part in parts for lat in part.latencies],
                   sum(part.errors for part in parts), sum(part.wall_s for part in parts),
                   [sample for part in parts for sample in part.error_samples],
                   sum(part.steady_ok for part in parts), sum(part.steady_s for part in parts))

    def as_dict(self) -> dict:
        return {"clients": self.clients, "requests_ok": self.ok, "errors": self.errors, "wall_s": self.wall_s,
                "throughput": self.throughput, "p50_ms": self.p(50), "p99_ms": self.p(99),
                "error_samples": self.error_samples[:3]}


def run_load(send: Send, clients: int, total: int, time_limit: float, warmup: int = 0) -> LoadResult:
    """Send ``total`` requests from ``clients`` threads (stop early after ``time_limit`` seconds).

    Each thread first sends ``warmup`` untimed requests on its own session (connection set-up,
    server-side first-call costs), then all threads start the timed run together.
    """
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    finished_at: list[float] = []  # perf_counter at each successful completion
    errors: list[str] = []
    deadline = [0.0]
    first_idle = [float("inf")]  # perf_counter when the first client ran out of work

    def start_clock() -> None:  # runs once, before any thread passes the barrier
        deadline[0] = time.monotonic() + time_limit

    barrier = threading.Barrier(clients + 1, action=start_clock)

    def client() -> None:
        with requests.Session() as session:
            for i in range(warmup):
                try:
                    send(session, -1 - i)
                except Exception as exc:  # noqa: BLE001 - every failure is an error to count
                    with lock:
                        errors.append(f"warm-up: {exc!r}"[:300])
            barrier.wait()
            while True:
                i = next(counter)
                if i >= total or time.monotonic() > deadline[0]:
                    with lock:
                        first_idle[0] = min(first_idle[0], time.perf_counter())
                    return
                t0 = time.perf_counter()
                try:
                    own = send(session, i)
                except Exception as exc:  # noqa: BLE001 - every failure is an error to count
                    with lock:
                        errors.append(repr(exc)[:300])
                    continue
                done = time.perf_counter()
                elapsed = own if own is not None else done - t0
                with lock:
                    latencies.append(elapsed)
                    finished_at.append(done)

    threads = [threading.Thread(target=client, name=f"client-{n}", daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(time_limit + 60)
    steady_end = min(first_idle[0], time.perf_counter())
    steady_ok = sum(1 for done in finished_at if done <= steady_end)
    return LoadResult(clients, latencies, len(errors), time.perf_counter() - started, errors,
                      steady_ok, steady_end - started)


def run_round_robin(sends: dict[str, Send], counts: dict[str, int], time_limit: float, warmup: int = 0,
                    burst: int = 4) -> dict[str, LoadResult]:
    """One client calling each path in turn, ``burst`` requests at a time, so all paths share the
    same moments of machine load.

    Each turn starts with one untimed request: TensorFlow's thread pools spin for a while after
    work, so the first call after another process's turn can pay for that process's spinning.
    Path ``key`` gets ``counts[key]`` timed requests (after ``warmup`` untimed ones); the run stops
    early after ``time_limit`` seconds. Throughput here is 1 / mean latency.
    """
    latencies: dict[str, list[float]] = {key: [] for key in sends}
    errors: dict[str, list[str]] = {key: [] for key in sends}
    sessions = {key: requests.Session() for key in sends}

    def call(key: str, i: int, timed: bool) -> None:
        t0 = time.perf_counter()
        try:
            own = sends[key](sessions[key], i)
        except Exception as exc:  # noqa: BLE001 - every failure is an error to count
            errors[key].append(("" if timed else "untimed: ") + repr(exc)[:300])
            return
        if timed:
            latencies[key].append(own if own is not None else time.perf_counter() - t0)

    try:
        for key in sends:
            for i in range(warmup):
                call(key, -1 - i, timed=False)
        deadline = time.monotonic() + time_limit
        for start in range(0, max(counts.values()), burst):
            for key in sends:
                todo = range(start, min(start + burst, counts[key]))
                if not todo or time.monotonic() > deadline:
                    continue
                call(key, -1, timed=False)
                for i in todo:
                    call(key, i, timed=True)
    finally:
        for session in sessions.values():
            session.close()
    return {key: LoadResult(1, latencies[key], len(errors[key]), sum(latencies[key]), errors[key]) for key in sends}
