"""Can this process listen on an address? Asked before a server starts, so a busy port is one clear line.

gunicorn's own answer to a busy port is five "Connection in use" lines a second apart and then
"Can't connect"; ``flask_server/gunicorn.conf.py`` asks here first. ``scripts/port_check.py``
(``make run``'s pre-flight) asks the same question, so both agree on what "busy" means.
"""

from __future__ import annotations

import socket


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` raises right now, or None if it is free.

    The probe sets SO_REUSEADDR like every server we start (gunicorn, http.server), so a port
    whose last connections are in TIME_WAIT counts as free and only a live listener counts as busy.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def describe(host: str, port: int, exc: OSError) -> str:
    """``host:port: reason`` with the operating system's reason (e.g. "Address already in use")."""
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}: {exc.strerror or exc}"
