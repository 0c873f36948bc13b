"""GATEWAY_TRUSTED_PROXIES: X-Forwarded-For is believed only as far as trusted proxies wrote it, for
the access log and the per-address budget of unknown API keys; hop counts and address lists, in
process (peer address from ``environ_base``) and through a real gunicorn."""

from __future__ import annotations

import ipaddress

import pytest
import requests

from flask_server.config import ConfigError
from flask_server.proxies import client_address, parse_address, parse_trusted_proxies
from flask_server.security import API_KEY_HEADER
from tests.gateway.conftest import closed_port_url
from tests.gateway.test_logging import access_lines
from tests.support.processes import start_gateway

XFF = "X-Forwarded-For"
PROXY = "10.0.0.5"           # the load balancer, as the gateway's peer
OTHER_PROXY = "10.0.0.6"
CLIENT = "203.0.113.9"       # the real client the balancer saw
SPOOFED = "198.51.100.66"    # what a client wrote into the header itself
TRUSTED_LIST = "10.0.0.0/24, 192.0.2.1"


def nets(*specs: str) -> tuple:
    return tuple(ipaddress.ip_network(spec) for spec in specs)


# --- parsing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("", 0), ("  ", 0), ("0", 0), ("1", 1), (" 2 ", 2),
    ("10.0.0.5", nets("10.0.0.5/32")),
    ("10.0.0.0/24, 192.0.2.1", nets("10.0.0.0/24", "192.0.2.1/32")),
    ("10.1.2.3/8,::1", nets("10.0.0.0/8", "::1/128")),
])
def test_parse_trusted_proxies(spec, expected):
    assert parse_trusted_proxies(spec) == expected


@pytest.mark.parametrize("spec", ["-1", "proxy.example", "10.0.0.0/33", "1, 2"])
def test_bad_settings_are_config_errors(spec, make_app):
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_PROXIES"):
        parse_trusted_proxies(spec)
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_PROXIES"):
        make_app(GATEWAY_TRUSTED_PROXIES=spec)


@pytest.mark.parametrize("text, expected", [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4:8080 ", "1.2.3.4"), ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("unknown", None), ("", None), ("1.2.3.4.5", None),
])
def test_parse_address(text, expected):
    address = parse_address(text)
    assert (None if address is None else str(address)) == expected


@pytest.mark.parametrize("peer, header, expected", [
    # a direct client outside the list: its own header is ignored
    (SPOOFED, CLIENT, SPOOFED),
    # through one trusted proxy
    (PROXY, CLIENT, CLIENT),
    # the client's own entry at the left is never believed
    (PROXY, f"{SPOOFED}, {CLIENT}", CLIENT),
    # through two trusted proxies (the first appended the client, the second the first)
    (PROXY, f"{SPOOFED}, {CLIENT}, {OTHER_PROXY}", CLIENT),
    # a dual-stack socket reports the IPv4 proxy as IPv4-mapped IPv6
    (f"::ffff:{PROXY}", CLIENT, CLIENT),
    # garbage where the proxy should have written an address: the proxy is all we know
    (PROXY, f"{CLIENT}, not-an-address", PROXY),
    # only trusted addresses: the left-most one is the client
    (PROXY, f"192.0.2.1, {OTHER_PROXY}", "192.0.2.1"),
])
def test_client_address_with_a_list(peer, header, expected):
    assert client_address(peer, header, parse_trusted_proxies(TRUSTED_LIST)) == expected


# --- in process: what the log and the limits see -----------------------------------------------------

def logged_client(app, capsys, peer: str, header: str | None) -> str:
    capsys.readouterr()
    headers = {XFF: header} if header is not None else {}
    app.test_client().get("/healthz", headers=headers, environ_base={"REMOTE_ADDR": peer})
    [entry] = access_lines(capsys.readouterr().err)
    return entry["client"]


@pytest.mark.parametrize("setting, peer, header, expected", [
    # off (the default): the header is never read
    (None, PROXY, CLIENT, PROXY),
    ("0", PROXY, CLIENT, PROXY),
    # hop counts: Werkzeug's ProxyFix takes the N-th entry from the right
    ("1", PROXY, f"{SPOOFED}, {CLIENT}", CLIENT),
    ("2", PROXY, f"{SPOOFED}, {CLIENT}, {OTHER_PROXY}", CLIENT),
    ("2", PROXY, CLIENT, PROXY),  # fewer entries than hops: the header is not trusted at all
    ("1", PROXY, None, PROXY),
    # lists: only a listed peer's header counts
    (TRUSTED_LIST, PROXY, f"{SPOOFED}, {CLIENT}", CLIENT),
    (TRUSTED_LIST, SPOOFED, CLIENT, SPOOFED),
])
def test_the_log_sees_the_client(make_app, capsys, setting, peer, header, expected):
    settings = {"GATEWAY_LOG_FORMAT": "json"}
    if setting is not None:
        settings["GATEWAY_TRUSTED_PROXIES"] = setting
    assert logged_client(make_app(**settings), capsys, peer, header) == expected


KEYS = "right-key-0123456789abcdef"
MODELS = "/v1/models"


def guesses(client, peer: str, header: str | None, count: int) -> list[int]:
    headers = {API_KEY_HEADER: "guess", **({XFF: header} if header else {})}
    return [client.get(MODELS, headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code
            for _ in range(count)]


@pytest.mark.parametrize("setting", ["1", TRUSTED_LIST])
def test_unknown_key_budgets_are_per_client_behind_a_trusted_proxy(make_app, setting):
    client = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_AUTH_FAILURE_LIMIT="2/minute",
                      GATEWAY_TRUSTED_PROXIES=setting).test_client()
    assert guesses(client, PROXY, CLIENT, 3) == [403, 403, 429]
    # another client behind the same proxy keeps its own budget
    assert guesses(client, PROXY, "203.0.113.10", 1) == [403]
    # the blocked client cannot escape by writing another address at the left of the header
    assert guesses(client, PROXY, f"203.0.113.11, {CLIENT}", 1) == [429]


def test_a_direct_client_cannot_borrow_another_budget(make_app):
    client = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_AUTH_FAILURE_LIMIT="2/minute",
                      GATEWAY_TRUSTED_PROXIES=TRUSTED_LIST).test_client()
    assert guesses(client, SPOOFED, None, 3) == [403, 403, 429]
    # a fresh address in its own header does not reset it
    assert guesses(client, SPOOFED, "203.0.113.77", 1) == [429]


def test_without_trusted_proxies_everyone_behind_the_proxy_shares_one_budget(make_app):
    # the problem the setting solves, shown so the test above cannot pass for another reason
    client = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_AUTH_FAILURE_LIMIT="2/minute").test_client()
    assert guesses(client, PROXY, CLIENT, 2) == [403, 403]
    assert guesses(client, PROXY, "203.0.113.10", 1) == [429]


# --- through gunicorn -------------------------------------------------------------------------------

@pytest.mark.e2e
def test_gunicorn_logs_the_forwarded_client_only_from_a_trusted_proxy():
    # The test connects from 127.0.0.1, which plays the proxy when listed and a direct client when not.
    base = {"MODEL_SERVER_URL": closed_port_url(), "GATEWAY_LOG_FORMAT": "json"}
    seen = {}
    for name, setting in (("listed", "127.0.0.1"), ("other", "10.9.9.9")):
        with start_gateway({**base, "GATEWAY_TRUSTED_PROXIES": setting}) as gateway:
            reply = requests.get(gateway.url + "/healthz", headers={XFF: f"{SPOOFED}, {CLIENT}",
                                                                    "X-Request-ID": f"xff-{name}"}, timeout=10)
            assert reply.status_code == 200
            gateway.stop()
            [entry] = [e for e in access_lines(gateway.log()) if e["request_id"] == f"xff-{name}"]
            seen[name] = entry["client"]
    assert seen == {"listed": CLIENT, "other": "127.0.0.1"}
