"""The floor: the exported SavedModel called in-process, in a bare process the benchmark drives.

The benchmark spawns this module, waits for its ``{"ready": ...}`` line, then sends one JSON
command per stdin line and reads one JSON answer per stdout line, so the ``model`` row is measured
at the same moments as the server rows (the machine is shared and noisy)::

    {"latency": 30}                  -> {"p50_ms", "p99_ms", "n"}      batch-1 calls, one at a time
    {"throughput": [4, 48]}          -> {"batch", "images", "img_per_s", "cpu_ms_per_img"}
    {"concurrent": [2, 1, 48]}       -> the same, from 2 threads calling batch 1 at once

``cpu_ms_per_img`` is this process's CPU time (all TensorFlow threads) per image during the run:
what the model alone costs the machine, to compare with the servers' CPU per image.

It loads the SavedModel with ``tf.saved_model.load`` and calls signature ``serving_default`` on an
already preprocessed batch (random values in [-1, 1]: speed does not depend on pixel values).
``--executor session`` instead runs it the way the model server does (``model_server.servable``:
a ``tf.compat.v1.Session`` callable), so ``python -m bench.execution`` can compare the two. Its
memory is read by the benchmark from /proc like the servers'; this process holds only the model,
so it is the baseline a model server's RSS is compared with.

``--intra-op`` / ``--inter-op`` set TensorFlow's thread pools (0 = TensorFlow's default, one thread
per core), as the model server's ``--tensorflow_intra_op_parallelism`` flags do (bench/threads.py).

Typical usage (by hand)::

    echo '{"latency": 10}' | python -m bench.bare_model --version-dir /tmp/m/1
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from bench.stats import percentile
from serving_contract.export import INPUT_IMAGE, OUTPUT_PROBABILITIES, SERVING_DEFAULT

SIGNATURE = SERVING_DEFAULT
INPUT = INPUT_IMAGE
OUTPUT = OUTPUT_PROBABILITIES
WARMUP_CALLS = 3


class BareModel:
    """One SavedModel signature and ready-made random inputs of each batch size."""

    def __init__(self, version_dir: Path, intra_op: int = 0, inter_op: int = 0, executor: str = "function") -> None:
        import numpy as np
        import tensorflow as tf

        # Before anything runs: TensorFlow fixes its thread pools at the first operation.
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        self._tf, self._rng = tf, np.random.default_rng(0)
        if executor == "session":
            from model_server.servable import load_servable, session_config

            servable = load_servable("bare", 1, version_dir, warm_up=False, config=session_config(intra_op, inter_op))
            self.predict = lambda image: {OUTPUT: servable.run(SIGNATURE, {INPUT: image})[OUTPUT]}
            self._to_input = lambda values: values
            self.height, self.width = servable.signatures[SIGNATURE].inputs[INPUT].shape[1:3]
        else:
            function = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
            self.predict = lambda image: {OUTPUT: function(**{INPUT: image})[OUTPUT].numpy()}
            self._to_input = tf.constant
            self.height, self.width = function.structured_input_signature[1][INPUT].shape[1:3]
        self._inputs: dict[int, object] = {}
        for _ in range(WARMUP_CALLS):
            self.run(1)

    def thread_pools(self) -> list[int]:
        """[intra-op, inter-op] threads as TensorFlow reports them (0 = its default, one per core)."""
        threading_config = self._tf.config.threading
        return [threading_config.get_intra_op_parallelism_threads(), threading_config.get_inter_op_parallelism_threads()]

    def run(self, batch: int):
        """One call at ``batch`` images; returns the probabilities as numpy."""
        if batch not in self._inputs:
            values = self._rng.uniform(-1, 1, (batch, self.height, self.width, 3)).astype("float32")
            self._inputs[batch] = self._to_input(values)
            self.predict(self._inputs[batch])  # the first call at a new shape retraces
        return self.predict(self._inputs[batch])[OUTPUT]

    def latency(self, calls: int) -> dict:
        """Batch-1 latency over ``calls`` sequential calls."""
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            out = self.run(1)
            times.append(time.perf_counter() - t0)
        if out.shape[0] != 1 or abs(float(out.sum()) - 1.0) > 1e-3:
            raise RuntimeError(f"expected one softmax row, got shape {out.shape} sum {out.sum()}")
        return {"n": calls, "p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99)}

    def throughput(self, batch: int, images: int, callers: int = 1) -> dict:
        """Images per second with ``callers`` threads each calling at ``batch`` (at once) until at
        least ``images`` images are done in all."""
        self.run(batch)  # creates the input outside the threads
        calls = max(1, -(-images // (batch * callers)))

        def call_repeatedly() -> None:
            for _ in range(calls):
                self.run(batch)

        threads = [threading.Thread(target=call_repeatedly) for _ in range(callers)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = calls * batch * callers
        return {"batch": batch, "callers": callers, "images": done, "img_per_s": done / (time.perf_counter() - t0),
                "cpu_ms_per_img": 1000 * (time.process_time() - cpu0) / done}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--intra-op", type=int, default=0, help="intra-op threads (0 = TensorFlow's default)")
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0 = TensorFlow's default)")
    parser.add_argument("--executor", choices=("function", "session"), default="function",
                        help="tf.saved_model.load's function (default) or the model server's Session callable")
    args = parser.parse_args(argv)
    model = BareModel(args.version_dir, args.intra_op, args.inter_op, args.executor)
    threads = model.thread_pools()
    print(json.dumps({"ready": True, "input_size": [model.height, model.width], "threads": threads}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if "latency" in command:
            answer = model.latency(int(command["latency"]))
        elif "concurrent" in command:
            callers, batch, images = map(int, command["concurrent"])
            answer = model.throughput(batch, images, callers)
        else:
            answer = model.throughput(*map(int, command["throughput"]))
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
