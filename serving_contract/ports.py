"""Can this process listen on a TCP address? Asked before a server starts, so a busy port is one clear line.

Three places ask, and must agree on what "busy" means: the model server reserves its gRPC port
before loading models (``model_server/server.py``), gunicorn checks the gateway's address before
binding (``flask_server/gunicorn.conf.py``; its own answer is five "Connection in use" retries),
and ``make run``'s pre-flight checks every port (``scripts/port_check.py``).
"""

from __future__ import annotations

import socket


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and not listening; OSError if another process listens there.

    While it is held, clients connecting to the port are refused (nothing listens), and nobody
    else can listen there. SO_REUSEADDR, like every server we start (gunicorn, http.server, gRPC),
    so a port whose last connections are in TIME_WAIT counts as free and only a live listener as busy.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` raises right now, or None if it is free."""
    try:
        reserve_port(host, port).close()
    except OSError as exc:
        return exc
    return None
