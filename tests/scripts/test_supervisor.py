"""scripts/supervisor.py: backoff arithmetic, exit descriptions, and watch() on real short-lived processes."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from scripts.processes import ChildProcess
from scripts.supervisor import Backoff, Server, Supervisor, describe_exit

EXITS_WITH_3 = [sys.executable, "-c", "print('boom: bad state'); raise SystemExit(3)"]
RUNS = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run():
    backoff = Backoff(initial=1, maximum=30, stable_after=60)
    # test that short runs double the delay up to the cap
    assert [backoff.delay(uptime=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    # test that a run of a minute or more starts over at the initial delay
    assert backoff.delay(uptime=60) == 1
    assert backoff.delay(uptime=5) == 2


@pytest.mark.parametrize(("returncode", "text"), [(3, "code 3"), (-9, "code -9 (SIGKILL)"),
                                                   (-15, "code -15 (SIGTERM)"), (0, "code 0")])
def test_describe_exit(returncode, text):
    assert describe_exit(returncode) == text


def never_ready(child: ChildProcess, stop: threading.Event) -> float:
    return 0.0


def supervise(args: list[str], restart: bool) -> tuple[Supervisor, Server, list[str]]:
    said: list[str] = []
    server = Server("worker", lambda: ChildProcess("worker", args, echo=False), never_ready,
                    backoff=Backoff(initial=0.2, maximum=1, stable_after=60))
    return Supervisor([server], threading.Event(), restart=restart, say=said.append), server, said


def wait_for_exit(child: ChildProcess) -> None:
    child.popen.wait(20)


@pytest.mark.e2e
def test_watch_reports_an_exit_then_restarts_after_the_backoff():
    supervisor, server, said = supervise(EXITS_WITH_3, restart=True)
    try:
        supervisor.start_all()
        first = server.child
        wait_for_exit(first)
        assert supervisor.watch() is None
        # test that the exit line has the code, and the log's last lines follow it
        report = said[-1]
        assert "[worker] exited unexpectedly with code 3" in report and "restarting in 0 s" in report
        assert "boom: bad state" in report
        # test that the restart waits for its delay, then starts a new process
        deadline = time.monotonic() + 10
        while server.child is first:
            assert time.monotonic() < deadline, said
            supervisor.watch()
            time.sleep(0.05)
        assert server.restarts == 1 and any("started again (restart 1)" in line for line in said)
    finally:
        supervisor.stop_all()


@pytest.mark.e2e
def test_without_restart_watch_asks_to_stop_everything():
    supervisor, server, said = supervise(EXITS_WITH_3, restart=False)
    try:
        supervisor.start_all()
        wait_for_exit(server.child)
        assert supervisor.watch() == 1
        assert "--no-restart" in said[-1] and "code 3" in said[-1]
    finally:
        supervisor.stop_all()


@pytest.mark.e2e
def test_a_running_server_is_left_alone_and_stopped_on_request():
    supervisor, server, said = supervise(RUNS, restart=True)
    supervisor.start_all()
    assert supervisor.watch() is None and server.child.alive() and server.restarts == 0
    supervisor.stop_all()
    assert not server.child.alive() and said[-1].startswith("[worker] stopped (exit code")
