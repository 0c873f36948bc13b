"""Which ports are busy, and who holds them: ``make run``'s pre-flight, before anything is started.

* ``PortUse``: a port a launcher will listen on, with the flag and make variable that change it.
* ``busy_ports`` -> one line per problem (a port in use, or the same port given twice), naming
  the port, what holds it (pid and command, when this user can see them) and how to pick another.
* ``listener_pids``: the pids listening on a TCP port, read from ``/proc/net/tcp{,6}`` and
  ``/proc/<pid>/fd`` (Linux); scripts/processes.py uses it to accept a readiness answer only from
  the server it started.

Typical use (scripts/auto_cmd.py)::

    problems = busy_ports("127.0.0.1", [PortUse(9000, "model server REST API", "--rest-api-port", "REST_API_PORT")])
    if problems:
        sys.exit("\\n".join(problems))
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from serving_contract.ports import bind_error

PROC = Path("/proc")
TCP_TABLES = ("net/tcp", "net/tcp6")
TCP_LISTEN = "0A"  # the kernel's TCP_LISTEN state, as /proc/net/tcp prints it
COMMAND_LIMIT = 120  # characters of a holder's command line quoted in a message


@dataclass(frozen=True)
class PortUse:
    """A port a launcher will listen on, and how its user picks another one."""

    port: int
    what: str
    flag: str
    make_variable: str

    def how_to_change(self) -> str:
        return f"pick another with {self.flag}=PORT (make run {self.make_variable}=PORT)"


def _listening_inodes(port: int, proc: Path = PROC) -> set[str]:
    """Socket inodes in LISTEN state on ``port`` (any address) in this network namespace."""
    inodes = set()
    for table in TCP_TABLES:
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if len(fields) > 9 and fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listener_pids(port: int, proc: Path = PROC) -> set[int] | None:
    """Pids with a socket listening on ``port``; None when that cannot be seen (no /proc, another user's)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:  # another user's process, or it just exited
            continue
        for fd in fds:
            try:
                if os.readlink(entry / "fd" / fd) in targets:
                    pids.add(int(entry.name))
                    break
            except OSError:
                continue
    return pids or None


def command_line(pid: int, proc: Path = PROC) -> str:
    """The process's command line, shortened; "" when it cannot be read."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    # Whitespace collapsed: a `python -c` program spans lines, and a message must stay one line.
    command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return command if len(command) <= COMMAND_LIMIT else command[:COMMAND_LIMIT - 3] + "..."


def describe_holder(port: int, proc: Path = PROC) -> str:
    """"pid 123 (python3 -m http.server 9000)", or why the holder is unknown."""
    pids = listener_pids(port, proc)
    if not pids:
        return "another process (its pid is not visible to this user)"
    # gunicorn's master and workers all hold the socket: name the oldest (lowest pid), usually the parent.
    pid = min(pids)
    command = command_line(pid, proc)
    more = f" and {len(pids) - 1} more" if len(pids) > 1 else ""
    return f"pid {pid}{more}" + (f" ({command})" if command else "")


def busy_ports(host: str, uses: Sequence[PortUse]) -> list[str]:
    """One line per port that cannot be used; empty when every port is free and given once."""
    problems = []
    seen: dict[int, PortUse] = {}
    for use in uses:
        if use.port in seen:
            problems.append(f"error: port {use.port} is given for both the {seen[use.port].what} "
                            f"({seen[use.port].flag}) and the {use.what} ({use.flag}); {use.how_to_change()}")
            continue
        seen[use.port] = use
        exc = bind_error(host, use.port)
        if exc is None:
            continue
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = f"it is in use by {describe_holder(use.port)}"
        problems.append(f"error: port {use.port} ({use.what}) on {host} cannot be used: {reason}; "
                        f"{use.how_to_change()}")
    return problems
