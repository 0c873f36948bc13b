"""Asserting the model server's errors the way json_tensor_test.cc does: the kind, then the message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from model_server.errors import InvalidArgument, ServingError


def error_message(fn: Callable[..., object], *args: object, cls: type[ServingError] = InvalidArgument) -> str:
    """Call ``fn(*args)``, check it raises exactly ``cls``, and return the error's message."""
    with pytest.raises(ServingError) as info:
        fn(*args)
    assert type(info.value) is cls
    return str(info.value)
