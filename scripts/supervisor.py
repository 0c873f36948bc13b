"""Keep servers running: a server that exits unexpectedly is reported and restarted with backoff.

What a process manager (systemd's ``Restart=on-failure``, a Kubernetes restart policy) does for the
real deployment, ``make run`` does here, so a model server killed by the OOM killer comes back by
itself and the gateway, which stays up, answers 503 meanwhile instead of connection refused.

* ``Backoff``: about 1 s, doubling up to 30 s; back to 1 s once a run has lasted a minute.
* ``Supervisor``: starts each ``Server``, waits until it is ready, then ``watch()`` (called every
  half second) notices exits, prints one line with the exit code and the log's last lines, cleans
  up what the dead process left in its group, and starts it again when its delay is over.
  ``restart=False`` reports the exit and asks the caller to stop everything (``--no-restart``).

Processes are started, waited for and stopped only through scripts/processes.py.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from scripts.processes import ChildDied, ChildProcess, StopRequested

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a run this long was healthy: the next failure starts the backoff over
EXIT_LOG_LINES = 12    # lines of a dead server's log quoted under its exit line


class Backoff:
    """Delays before successive restarts: ``initial`` doubling to ``maximum``, reset after a stable run."""

    def __init__(self, initial: float = INITIAL_BACKOFF_S, maximum: float = MAX_BACKOFF_S,
                 stable_after: float = STABLE_AFTER_S) -> None:
        self.initial, self.maximum, self.stable_after = initial, maximum, stable_after
        self._next = initial

    def delay(self, uptime: float) -> float:
        """Seconds to wait before restarting a server that ran ``uptime`` seconds."""
        if uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


def _indent(child: ChildProcess) -> str:
    """The child's last log lines, set off from the launcher's own output."""
    return "\n".join(f"  | {line}" for line in child.tail(EXIT_LOG_LINES).splitlines())


def describe_exit(returncode: int | None) -> str:
    """"code 3" or "code -9 (SIGKILL)"."""
    if returncode is not None and returncode < 0:
        try:
            return f"code {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"code {returncode}"


@dataclass
class Server:
    """One supervised server: how to start it and how to wait until it is ready.

    ``wait_ready(child, stop)`` returns the seconds it took, or raises ChildDied / TimeoutError /
    StopRequested like scripts/processes.py's waits. ``wait_ready_again`` is the check after a
    restart (default: the same); the gateway's is its liveness, since its readiness also needs
    the model server, which may be the one still coming back.
    """

    name: str
    start: Callable[[], ChildProcess]
    wait_ready: Callable[[ChildProcess, threading.Event], float]
    wait_ready_again: Callable[[ChildProcess, threading.Event], float] | None = None
    child: ChildProcess | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # monotonic time of a pending restart
    restarts: int = 0


class Supervisor:
    """Starts servers in order, then keeps them running (or reports the first exit with ``restart=False``)."""

    def __init__(self, servers: Iterable[Server], stop: threading.Event, restart: bool = True,
                 say: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
        self.servers = list(servers)
        self.stop = stop
        self.restart = restart
        self.say = say

    def start_all(self) -> dict[str, float]:
        """Spawn every server, then wait for each in order; {name: seconds to ready}.

        A failure here is not retried (ChildDied, TimeoutError, StopRequested propagate): a server
        that cannot start once, e.g. on a bad flag, would only fail again.
        """
        for server in self.servers:
            self._spawn(server)
        return {server.name: server.wait_ready(server.child, self.stop) for server in self.servers}

    def watch(self) -> int | None:
        """Handle exits and due restarts; returns an exit code when the caller should stop everything."""
        now = time.monotonic()
        for server in self.servers:
            child = server.child
            if server.restart_at is None and child is not None and not child.alive():
                uptime = now - child.started_at
                child.stop()  # reaps it and kills what it left in its group (gunicorn workers)
                exited = f"[{server.name}] exited unexpectedly with {describe_exit(child.popen.returncode)} " \
                         f"after {uptime:.1f} s"
                if not self.restart:
                    self.say(f"\nerror: {exited}; stopping everything (--no-restart). Last lines:\n{_indent(child)}")
                    return 1
                delay = server.backoff.delay(uptime)
                server.restart_at = now + delay
                self.say(f"\n{exited}; restarting in {delay:.0f} s. Last lines:\n{_indent(child)}")
            elif server.restart_at is not None and now >= server.restart_at:
                server.restart_at = None
                server.restarts += 1
                self._spawn(server)
                threading.Thread(target=self._report_ready, args=(server, server.child), daemon=True,
                                 name=f"{server.name}-ready").start()
        return None

    def stop_all(self) -> None:
        """Stop the servers in reverse order (the gateway before its backend), saying each exit code."""
        for server in reversed(self.servers):
            if server.child is not None:
                self.say(f"[{server.name}] stopped (exit code {server.child.stop()})")

    def _spawn(self, server: Server) -> None:
        server.child = server.start()
        again = f" again (restart {server.restarts})" if server.restarts else ""
        self.say(f"[{server.name}] started{again}, pid {server.child.pid}")

    def _report_ready(self, server: Server, child: ChildProcess) -> None:
        wait = server.wait_ready_again or server.wait_ready
        try:
            elapsed = wait(child, self.stop)
        except (ChildDied, StopRequested):
            return  # watch() reports the exit; a stop needs no report
        except TimeoutError as exc:
            self.say(f"[{server.name}] not ready yet: {exc}")
            return
        self.say(f"[{server.name}] ready again after {elapsed:.1f} s (pid {child.pid})")
