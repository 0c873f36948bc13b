"""Running one signature of a held version, bounded by a deadline: shared by the REST and gRPC fronts.

Both fronts hand tensors to the same ``submit`` function (``ModelServer._submit``: the batching
queue when batching is on, else the model-call pool), so they share one version manager, one
queue and one thread budget.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from model_server.errors import DeadlineExceeded
from model_server.repository import ServableHandle

# (servable handle, signature name, input tensors) -> future of output tensors
SubmitFn = Callable[[ServableHandle, str, dict[str, np.ndarray]], Future]


def run_with_deadline(submit: SubmitFn, handle: ServableHandle, signature: str, tensors: dict[str, np.ndarray],
                      timeout_s: float | None) -> dict[str, np.ndarray]:
    """Submit one call and wait up to ``timeout_s`` (None: no limit) for its outputs.

    Raises DeadlineExceeded("Deadline Exceeded") when the time runs out, and whatever ServingError
    the call raised otherwise.
    """
    future = submit(handle, signature, tensors)
    try:
        return future.result(timeout=None if timeout_s is None else max(timeout_s, 0.0))
    except FutureTimeout:
        future.cancel()  # only helps if it has not started; a running TF call cannot be stopped
        raise DeadlineExceeded("Deadline Exceeded") from None
