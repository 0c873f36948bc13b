"""API keys and rate limits: parsing, the 401/403/429 answers, what is never gated, and limits shared
through Redis between two real gunicorn processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from flask_server.config import ConfigError, GatewayConfig
from flask_server.security import (API_KEY_HEADER, DEFAULT_TIER, KeyRing, fingerprint, load_key_ring,
                                   parse_key_entries, parse_rate_limits)
from tests.gateway.conftest import closed_port_url
from tests.support.processes import start_gateway
from tests.support.redis_server import redis_url  # noqa: F401 (fixture)

GOLD_KEY = "gold-key-0123456789abcdef"
PLAIN_KEY = "plain-key-fedcba9876543210"
KEYS = f"{PLAIN_KEY},{GOLD_KEY}:gold"
LIMITS = "default=2/minute;gold=4/minute"
MODELS = "/v1/models"


@pytest.fixture
def keyed_app(make_app):
    return make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_RATE_LIMITS=LIMITS, GATEWAY_CORS_ORIGINS="http://front.example")


@pytest.fixture
def keyed(keyed_app):
    return keyed_app.test_client()


# --- parsing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("entries, expected", [
    (["k1"], [("k1", DEFAULT_TIER)]),
    (["k1:gold", " k2 : silver "], [("k1", "gold"), ("k2", "silver")]),
    (["", "  ", "# a comment", "k3 # trailing comment"], [("k3", DEFAULT_TIER)]),
])
def test_parse_key_entries(entries, expected):
    assert parse_key_entries(entries) == expected


def test_parse_key_entries_rejects_an_empty_key():
    with pytest.raises(ConfigError, match="empty key"):
        parse_key_entries([":gold"])


@pytest.mark.parametrize("spec, expected", [
    ("default=60/minute", {"default": "60/minute"}),
    ("default=60/minute; gold=600/minute,10000/day", {"default": "60/minute", "gold": "600/minute,10000/day"}),
    ("", {}),
])
def test_parse_rate_limits(spec, expected):
    assert parse_rate_limits(spec) == expected


@pytest.mark.parametrize("spec", ["default", "=60/minute", "default="])
def test_parse_rate_limits_rejects(spec):
    with pytest.raises(ConfigError, match="tier=limit"):
        parse_rate_limits(spec)


def test_keys_file_and_setting_are_merged(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# operators\nfile-key:gold\n\n")
    ring = load_key_ring(GatewayConfig(api_keys="env-key", api_keys_file=str(keys_file)))
    assert (ring.tier_of("env-key"), ring.tier_of("file-key"), ring.tier_of("nope")) == (DEFAULT_TIER, "gold", None)
    # the ring holds digests only: no key can be read back from it
    assert b"env-key" not in b"".join(ring.digests)


def test_no_keys_means_auth_off():
    assert not KeyRing().enabled
    assert not load_key_ring(GatewayConfig()).enabled


def test_missing_keys_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="GATEWAY_API_KEYS_FILE"):
        load_key_ring(GatewayConfig(api_keys_file=str(tmp_path / "absent.txt")))


def test_tier_without_a_limit_is_a_config_error(make_app):
    with pytest.raises(ConfigError, match="platinum"):
        make_app(GATEWAY_API_KEYS="k:platinum", GATEWAY_RATE_LIMITS="default=1/minute")


def test_fingerprint_is_short_stable_and_not_the_key():
    assert fingerprint(GOLD_KEY) == fingerprint(GOLD_KEY) != fingerprint(PLAIN_KEY)
    assert len(fingerprint(GOLD_KEY)) == 12 and GOLD_KEY[:6] not in fingerprint(GOLD_KEY)


# --- 401 / 403 / 200 ------------------------------------------------------------------------------

def test_no_key_is_401_with_www_authenticate(keyed):
    response = keyed.get(MODELS)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert "API key is required" in response.json["error"] and response.json["request_id"]


def test_unknown_key_is_403(keyed):
    response = keyed.get(MODELS, headers={API_KEY_HEADER: "not-a-key"})
    assert response.status_code == 403
    assert "unknown API key" in response.json["error"] and "not-a-key" not in response.json["error"]


@pytest.mark.parametrize("headers", [
    {API_KEY_HEADER: PLAIN_KEY},
    {"Authorization": f"Bearer {PLAIN_KEY}"},
    {"Authorization": f"bearer {GOLD_KEY}"},
])
def test_known_key_is_let_through(keyed, headers):
    assert keyed.get(MODELS, headers=headers).status_code == 200


def test_predict_routes_are_gated(keyed, png):
    assert keyed.post("/v1/models/imageclassifier/predict", data=png, content_type="image/png").status_code == 401
    assert keyed.post("/imageclassifier/predict/", data={"b64": "x"}).status_code == 401


# --- never gated ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/openapi.json", "/", "/docs", "/ui/app.js"])
def test_operational_and_static_paths_need_no_key(keyed, path):
    for _ in range(5):  # also more often than any tier's limit
        with keyed.get(path) as response:  # static files are streamed: close them
            assert response.status_code == 200, path


def test_readyz_is_not_gated(keyed):
    # 503 (the model server is unreachable here), but not 401
    assert keyed.get("/readyz").status_code == 503


def test_cors_preflight_needs_no_key(keyed):
    response = keyed.options("/v1/models/imageclassifier/predict", headers={
        "Origin": "http://front.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key, Content-Type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://front.example"


# --- rate limits ----------------------------------------------------------------------------------

def _statuses(client, n: int, headers: dict[str, str], path: str = MODELS) -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(n)]


def test_tiers_have_their_own_limits(keyed):
    assert _statuses(keyed, 3, {API_KEY_HEADER: PLAIN_KEY}) == [200, 200, 429]
    assert _statuses(keyed, 5, {API_KEY_HEADER: GOLD_KEY}) == [200, 200, 200, 200, 429]


def test_429_has_retry_after_and_the_json_error(keyed):
    _statuses(keyed, 2, {API_KEY_HEADER: PLAIN_KEY})
    response = keyed.get(MODELS, headers={API_KEY_HEADER: PLAIN_KEY})
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "2/minute" in response.json["error"] and response.json["request_id"]


def test_successful_answers_carry_no_retry_after(keyed):
    response = keyed.get(MODELS, headers={API_KEY_HEADER: PLAIN_KEY})
    assert response.status_code == 200 and "Retry-After" not in response.headers
    assert response.headers["X-RateLimit-Limit"] == "2"


def test_the_budget_is_per_key_and_shared_by_all_api_routes(keyed, png):
    headers = {API_KEY_HEADER: PLAIN_KEY}
    assert keyed.get(MODELS, headers=headers).status_code == 200
    # a different route of the same blueprint spends the same budget (503: no model server here)
    assert keyed.get("/v1/models/imageclassifier", headers=headers).status_code == 200
    assert keyed.get(MODELS, headers=headers).status_code == 429
    # ...while the other key still has all of its own
    assert keyed.get(MODELS, headers={API_KEY_HEADER: GOLD_KEY}).status_code == 200


def test_without_keys_nothing_is_rate_limited(make_app):
    """Limits are per key: with auth off no client is limited (a proxy must limit per address)."""
    client = make_app(GATEWAY_RATE_LIMITS="default=2/minute").test_client()
    responses = [client.get(MODELS) for _ in range(5)]
    assert {r.status_code for r in responses} == {200}
    assert not any(h.startswith("X-RateLimit") for r in responses for h in r.headers.keys())


@pytest.mark.e2e
@pytest.mark.parametrize("keys, imported", [("", False), (PLAIN_KEY, True)])
def test_flask_limiter_is_imported_only_with_keys(keys, imported):
    """It is most of the gateway's import time, so a gateway that cannot use it must not load it."""
    code = ("import sys; from flask_server.app import create_app; "
            f"create_app({{'MODEL_SERVER_URL': 'http://127.0.0.1:9', 'GATEWAY_API_KEYS': {keys!r}}}); "
            "print(*(m for m in ('flask_limiter', 'limits') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == (["flask_limiter", "limits"] if imported else [])


@pytest.mark.parametrize("keys, headers", [("", {}), (KEYS, {API_KEY_HEADER: GOLD_KEY})])
def test_empty_rate_limits_turn_limiting_off(make_app, keys, headers):
    client = make_app(GATEWAY_RATE_LIMITS="", GATEWAY_API_KEYS=keys).test_client()
    assert set(_statuses(client, 5, headers)) == {200}


def test_an_unreachable_redis_falls_back_to_per_process_limits(make_app):
    app = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_RATE_LIMITS=LIMITS,
                   GATEWAY_RATELIMIT_STORAGE_URI=closed_port_url().replace("http", "redis") + "/0")
    assert _statuses(app.test_client(), 3, {API_KEY_HEADER: PLAIN_KEY}) == [200, 200, 429]


# --- unknown keys: a per-address budget --------------------------------------------------------

FAILURE_LIMIT = "3/minute"


@pytest.fixture
def guarded(make_app):
    app = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_RATE_LIMITS=LIMITS, GATEWAY_AUTH_FAILURE_LIMIT=FAILURE_LIMIT)
    return app.test_client()


def test_unknown_keys_are_limited_per_address(guarded):
    guesses = [guarded.get(MODELS, headers={API_KEY_HEADER: f"guess-{i}"}) for i in range(5)]
    assert [r.status_code for r in guesses] == [403, 403, 403, 429, 429]
    limited = guesses[-1]
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert "too many unknown API keys" in limited.json["error"] and limited.json["request_id"]
    # once the budget is spent, a right guess cannot be told from a wrong one
    assert guarded.get(MODELS, headers={API_KEY_HEADER: GOLD_KEY}).status_code == 429
    # other addresses keep their own budget, and valid keys work from there
    other = {"REMOTE_ADDR": "10.0.0.9"}
    assert guarded.get(MODELS, headers={API_KEY_HEADER: GOLD_KEY}, environ_base=other).status_code == 200
    assert guarded.get(MODELS, headers={API_KEY_HEADER: "guess"}, environ_base=other).status_code == 403


def test_valid_keys_and_missing_keys_do_not_spend_the_budget(guarded):
    for _ in range(4):
        assert guarded.get(MODELS).status_code == 401
    assert _statuses(guarded, 4, {API_KEY_HEADER: GOLD_KEY}) == [200, 200, 200, 200]  # gold: 4/minute
    assert guarded.get(MODELS, headers={API_KEY_HEADER: "guess"}).status_code == 403


def test_the_budget_is_only_spent_on_the_api(guarded):
    for _ in range(5):
        assert guarded.get("/healthz", headers={API_KEY_HEADER: "guess"}).status_code == 200
    assert guarded.get(MODELS, headers={API_KEY_HEADER: "guess"}).status_code == 403


def test_default_failure_budget_is_configured(make_app):
    from flask_server.config import DEFAULT_AUTH_FAILURE_LIMIT

    client = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_RATE_LIMITS=LIMITS).test_client()
    budget = int(DEFAULT_AUTH_FAILURE_LIMIT.split("/")[0])
    statuses = [client.get(MODELS, headers={API_KEY_HEADER: "guess"}).status_code for _ in range(budget + 1)]
    assert statuses == [403] * budget + [429]


@pytest.mark.parametrize("setting, value", [("GATEWAY_AUTH_FAILURE_LIMIT", "often"),
                                            ("GATEWAY_RATE_LIMITS", "default=lots")])
def test_invalid_limits_are_config_errors(make_app, setting, value):
    with pytest.raises(ConfigError, match=setting):
        make_app(**{"GATEWAY_API_KEYS": KEYS, "GATEWAY_RATE_LIMITS": "default=1/minute;gold=2/minute", setting: value})


def test_empty_failure_limit_turns_the_budget_off(make_app):
    client = make_app(GATEWAY_API_KEYS=KEYS, GATEWAY_RATE_LIMITS=LIMITS, GATEWAY_AUTH_FAILURE_LIMIT="").test_client()
    assert {client.get(MODELS, headers={API_KEY_HEADER: "guess"}).status_code for _ in range(40)} == {403}


# --- real processes -------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.redis
def test_two_gunicorn_processes_share_the_limit_through_redis(redis_url):  # noqa: F811
    env = {"MODEL_SERVER_URL": closed_port_url(), "GATEWAY_API_KEYS": KEYS,
           "GATEWAY_RATE_LIMITS": "default=5/minute;gold=100/minute", "GATEWAY_RATELIMIT_STORAGE_URI": redis_url}
    headers = {API_KEY_HEADER: PLAIN_KEY}
    with start_gateway(env) as first, start_gateway(env) as second:
        statuses = []
        for _ in range(3):
            for server in (first, second):
                statuses.append(requests.get(server.url + MODELS, headers=headers, timeout=10))
        assert [r.status_code for r in statuses] == [200] * 5 + [429]
        assert int(statuses[-1].headers["Retry-After"]) > 0
        assert statuses[-1].json()["error"]


@pytest.mark.e2e
def test_keys_never_reach_the_log():
    env = {"MODEL_SERVER_URL": closed_port_url(), "GATEWAY_API_KEYS": KEYS, "GATEWAY_RATE_LIMITS": LIMITS,
           "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "DEBUG"}
    wrong_key = "wrong-key-5555555555555555"
    with start_gateway(env) as gateway:
        requests.get(gateway.url + MODELS, timeout=10)
        requests.get(gateway.url + MODELS, headers={API_KEY_HEADER: wrong_key}, timeout=10)
        for _ in range(3):  # the third one is 429
            requests.get(gateway.url + MODELS, headers={"Authorization": f"Bearer {PLAIN_KEY}"}, timeout=10)
        gateway.stop()
        log = gateway.log()
    assert fingerprint(PLAIN_KEY) in log and "429" in log
    for secret in (PLAIN_KEY, GOLD_KEY, wrong_key):
        assert secret not in log
