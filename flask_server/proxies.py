"""The client's real address behind trusted reverse proxies (``GATEWAY_TRUSTED_PROXIES``).

A load balancer in front of the gateway makes every request come from the balancer's address, so
per-address limits (the unknown-key budget in security.py) and the access log would see one client.
Proxies append the address they received the request from to ``X-Forwarded-For``; this module
rewrites ``REMOTE_ADDR`` from that header, before Flask sees the request, but only as far as the
header was written by proxies the operator trusts. Everything downstream reads
``request.remote_addr`` and so sees the real client.

``GATEWAY_TRUSTED_PROXIES`` takes one of:

- empty or ``0`` (default): no proxy is trusted; ``X-Forwarded-For`` is ignored.
- a number of hops ``N``: exactly N proxies always stand in front of the gateway, and it cannot be
  reached around them. Werkzeug's ``ProxyFix(x_for=N)`` takes the N-th address from the right.
- a comma-separated list of proxy addresses and networks (``10.0.0.0/8, 192.0.2.7, ::1``): only a
  request whose peer is in the list is rewritten, and the header is read from the right, skipping
  listed addresses, up to the first one that is not listed: that is the client. A direct client
  outside the list that sends the header itself is seen as itself. Use this form whenever the
  gateway can also be reached without the proxy.

Either way an address the client wrote at the left of the header is never believed, because each
trusted proxy appends to the right. Only ``X-Forwarded-For`` is read (not ``-Proto``/``-Host``).
The peer's own address stays in the WSGI environ under ``PEER_ADDR_KEY``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from flask_server.config import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SETTING = "GATEWAY_TRUSTED_PROXIES"
FORWARDED_FOR_ENVIRON = "HTTP_X_FORWARDED_FOR"
#: Where the rewritten request keeps the address of the peer that connected (the last proxy).
PEER_ADDR_KEY = "werkzeug.proxy_fix.orig"


def parse_trusted_proxies(spec: str) -> int | tuple[IPNetwork, ...]:
    """``GATEWAY_TRUSTED_PROXIES`` -> a hop count (0: off) or the trusted networks.

    :raise ConfigError: a negative count, or an entry that is neither an address nor a network.
    """
    spec = spec.strip()
    if not spec:
        return 0
    if spec.isdigit():
        return int(spec)
    if spec.lstrip("-").isdigit():
        raise ConfigError(f"{SETTING} must be a number of hops >= 0 or a list of addresses, got {spec!r}")
    networks = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        try:
            # strict=False: "10.1.2.3/8" means the network it lies in, as in most proxy configs.
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{SETTING}: {entry!r} is neither an IP address nor a network ({exc})") from exc
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it in ``X-Forwarded-For`` (``1.2.3.4``, ``1.2.3.4:80``,
    ``2001:db8::1``, ``[2001:db8::1]:80``), or None if it is not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has at least two colons
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address for a request from ``peer`` carrying ``X-Forwarded-For: forwarded_for``.

    ``peer`` itself unless it is trusted; then the right-most header entry that is not trusted. If an
    entry cannot be parsed, the last trusted hop before it is the client (that hop wrote nothing
    believable further left). If every entry is trusted, the left-most one.
    """
    if not _is_trusted(parse_address(peer), trusted):
        return peer
    client = peer
    hops = [entry for entry in forwarded_for.split(",") if entry.strip()]
    for entry in reversed(hops):
        address = parse_address(entry)
        if address is None:
            return client
        client = str(address)
        if not _is_trusted(address, trusted):
            return client
    return client


def _is_trusted(address: IPAddress | None, trusted: tuple[IPNetwork, ...]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # "::ffff:10.0.0.1" from a dual-stack socket
    return any(address in network for network in trusted)


class TrustedProxiesFix:
    """WSGI middleware: ``REMOTE_ADDR`` from ``X-Forwarded-For`` as far as ``trusted`` proxies wrote it.

    The list counterpart of Werkzeug's ``ProxyFix`` (which trusts a hop count); see the module doc.
    """

    def __init__(self, app: WSGIApp, trusted: tuple[IPNetwork, ...]) -> None:
        self.app = app
        self.trusted = trusted

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        forwarded_for = environ.get(FORWARDED_FOR_ENVIRON)
        peer = environ.get("REMOTE_ADDR")
        if forwarded_for and peer:
            environ[PEER_ADDR_KEY] = {"REMOTE_ADDR": peer}
            environ["REMOTE_ADDR"] = client_address(peer, forwarded_for, self.trusted)
        return self.app(environ, start_response)


def wrap(app: WSGIApp, spec: str) -> WSGIApp:
    """``app`` behind the middleware ``spec`` (``GATEWAY_TRUSTED_PROXIES``) asks for; unchanged when off.

    :raise ConfigError: see ``parse_trusted_proxies``.
    """
    trusted = parse_trusted_proxies(spec)
    if isinstance(trusted, int):
        # Only the address: X-Forwarded-Proto/Host are left to gunicorn's forwarded_allow_ips.
        return ProxyFix(app, x_for=trusted, x_proto=0, x_host=0, x_port=0, x_prefix=0) if trusted else app
    return TrustedProxiesFix(app, trusted) if trusted else app
