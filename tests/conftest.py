"""Fixtures and rules shared by every test.

* ``model_server_factory``: the one way a test starts ``python -m model_server`` (built on
  scripts/processes.py through tests/support/processes.py).
* The ``e2e`` rule: a test that starts a process must be marked ``@pytest.mark.e2e``, so that
  ``make test-fast`` (``-m "not e2e ..."``) never waits for one. A test that is not marked and
  starts a Python process or a server anyway (directly or through a fixture) fails with a message
  saying so. Helper commands libraries run for themselves (``uname -p`` under TensorFlow's
  import) are not what the rule is about.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.support.processes import ServerProcess, launch_model_server

E2E = "e2e"
# Fixtures that start processes: a test using one (even through another fixture) is e2e by that alone.
PROCESS_FIXTURES = {"model_server_factory", "launched", "redis_url"}
SERVER_BINARIES = {"redis-server", "chromium", "chromium-browser", "gunicorn", "flask", "tensorflow_model_server"}


@pytest.fixture(scope="session")
def model_server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """Start a model server: ``model_server_factory(**launch_model_server arguments) -> ServerProcess``.

    The server is ready when returned. Stop it when done (``server.stop()``, or use it in a
    ``with`` block); any still running at the end of the session are stopped here.
    """
    started: list[ServerProcess] = []

    def start(**options) -> ServerProcess:
        server = launch_model_server(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.terminate()  # all at once: their shutdowns overlap instead of adding up
    for server in started:
        server.stop()


# -- the e2e rule ------------------------------------------------------------------------------

_running: dict[str, pytest.Item | None] = {"item": None}
_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _is_python_or_server(args) -> bool:
    program = os.path.basename(str(args if isinstance(args, (str, bytes)) else args[0]).split()[0])
    return program.startswith("python") or program in SERVER_BINARIES


def _guarded_execute_child(self, args, *rest, **kwargs):
    item = _running["item"]
    if item is not None and item.get_closest_marker(E2E) is None and _is_python_or_server(args):
        raise RuntimeError(f"{item.nodeid} starts a process ({args!r:.200}) but is not marked "
                           "@pytest.mark.e2e: mark it, so that make test-fast leaves it out")
    return _execute_child(self, args, *rest, **kwargs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark e2e every test that depends on a fixture starting a process."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen._execute_child = _guarded_execute_child  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    # Around setup too: that is where fixtures (session-scoped servers included) start processes.
    _running["item"] = item
    try:
        yield
    finally:
        _running["item"] = None
