"""The response cache in the prediction pipeline, end to end against the real model server: a repeat
is a hit with the same answer, everything that changes the answer misses, a new model version
misses and then answers with its own scores, errors are never stored (nor answered around: a cached
image gets the 503 while the model server is down), hits, misses and Redis failures are counted,
and a Redis cache is shared by two gunicorn gateways (a real redis-server)."""

from __future__ import annotations

import base64
import io
import json

import pytest
import redis
import requests

from flask_server.registry import get_model
from flask_server.response_cache import CACHE_HEADER, HIT, KEY_PREFIX, MISS
from tests.gateway.conftest import (PREDICT, TINY, TINY_1000, TINY_SIZE, StubReply, assert_error, closed_port_url,
                                    image_bytes, routed)
from tests.gateway.test_metrics import sample
from tests.gateway.test_readiness import poll
from tests.support.processes import start_gateway
from tests.support.redis_server import redis_url  # noqa: F401 (fixture)
from tests.support.tiny_models import export_tiny_classifier

CACHE = "memory://?size=64"
TINY_PREDICT = f"/v1/models/{TINY}/predict"


@pytest.fixture
def cached_client(gateway_env, make_app):
    """A gateway with a memory cache in front of the session's real model server."""
    return make_app(**gateway_env, GATEWAY_CACHE=CACHE).test_client()


def post_image(client, image: bytes, path: str = TINY_PREDICT, **query):
    return client.post(path, data=image, content_type="image/png", query_string=query)


def ok(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# --- the pipeline -------------------------------------------------------------------------------------

def test_a_repeat_is_a_hit_with_the_same_answer(cached_client, served_client):
    image = image_bytes(seed=11)
    first, second = post_image(cached_client, image), post_image(cached_client, image)
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == (MISS, HIT)
    assert ok(second) == ok(first)
    # and it is the answer a gateway without a cache gives
    uncached = post_image(served_client, image)
    assert CACHE_HEADER not in uncached.headers
    assert ok(uncached) == ok(first)


def test_the_same_image_in_another_request_form_is_a_hit(cached_client):
    image = image_bytes(seed=12)
    assert post_image(cached_client, image).headers[CACHE_HEADER] == MISS
    as_json = cached_client.post(TINY_PREDICT, json={"b64": base64.b64encode(image).decode()})
    assert as_json.headers[CACHE_HEADER] == HIT
    as_file = cached_client.post(TINY_PREDICT, data={"file": (io.BytesIO(image), "x.png")},
                                 content_type="multipart/form-data")
    assert as_file.headers[CACHE_HEADER] == HIT


@pytest.mark.parametrize("change", ["another image", "another top_k", "another route, same model"])
def test_what_changes_the_answer_misses(cached_client, change):
    image = image_bytes(seed=13)
    assert post_image(cached_client, image, top_k=3).headers[CACHE_HEADER] == MISS
    if change == "another image":
        again = post_image(cached_client, image_bytes(seed=14), top_k=3)
    elif change == "another top_k":
        again = post_image(cached_client, image, top_k=4)
        assert len(ok(again)["predictions"]) == 4
    else:
        # tiny_json serves the same model through another signature and its own settings
        again = post_image(cached_client, image, path="/v1/models/tiny_json/predict", top_k=3)
    assert again.headers[CACHE_HEADER] == MISS


def test_a_batch_hits_only_when_every_image_is_cached(cached_client):
    images = [base64.b64encode(image_bytes(seed=s)).decode() for s in (15, 16, 17)]
    batch = {"instances": [{"b64": images[0]}, {"b64": images[1]}]}
    first = cached_client.post(TINY_PREDICT, json=batch)
    assert first.headers[CACHE_HEADER] == MISS
    again = cached_client.post(TINY_PREDICT, json=batch)
    assert again.headers[CACHE_HEADER] == HIT and ok(again) == ok(first)
    # each image was stored on its own: alone it is a hit too
    single = cached_client.post(TINY_PREDICT, json={"b64": images[1]})
    assert single.headers[CACHE_HEADER] == HIT and ok(single)["predictions"] == ok(first)["predictions"][1]
    mixed = cached_client.post(TINY_PREDICT, json={"instances": [{"b64": images[0]}, {"b64": images[2]}]})
    assert mixed.headers[CACHE_HEADER] == MISS
    assert ok(mixed)["predictions"][0] == ok(first)["predictions"][0]


def test_the_tutorial_route_uses_the_cache(cached_client, photo):
    first = cached_client.post("/imageclassifier/predict/", data={"b64": base64.b64encode(photo).decode()})
    second = cached_client.post("/imageclassifier/predict/", data={"b64": base64.b64encode(photo).decode()})
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == (MISS, HIT)
    assert ok(second) == ok(first) and len(ok(first)) == 5


def test_browser_pages_may_read_the_header(gateway_env, make_app):
    origin = "https://app.example.com"
    client = make_app(**gateway_env, GATEWAY_CACHE=CACHE, GATEWAY_CORS_ORIGINS=origin).test_client()
    response = client.post(TINY_PREDICT, data=image_bytes(seed=21), content_type="image/png",
                           headers={"Origin": origin})
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert CACHE_HEADER.lower() in exposed and response.headers[CACHE_HEADER] == MISS


def test_hits_and_misses_are_counted(cached_client):
    image = image_bytes(seed=18)
    for _ in range(3):
        post_image(cached_client, image)
    metrics = cached_client.get("/metrics").get_data(as_text=True)
    assert sample(metrics, "gateway_cache_requests_total", model=TINY, result=MISS) == 1
    assert sample(metrics, "gateway_cache_requests_total", model=TINY, result=HIT) == 2


# --- errors are never stored ----------------------------------------------------------------------------

def test_errors_carry_no_cache_header_and_are_not_counted(make_app, gateway_env, model_server, tmp_path, png):
    config = tmp_path / "models.toml"
    config.write_text(f'[models.wrong]\nmodel_name = "{TINY_1000}"\ninput_size = [64, 64]\n')
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config), GATEWAY_CACHE=CACHE).test_client()
    for _ in range(2):  # the real model server's export does not fit: 502 every time, never a stored answer
        response = post_image(client, png, path="/v1/models/wrong/predict")
        assert_error(response, 502, "takes 48x48 images")
        assert CACHE_HEADER not in response.headers
    bad = post_image(client, png, path="/v1/models/wrong/predict", top_k=0)
    assert_error(bad, 400, "top_k")
    assert CACHE_HEADER not in bad.headers
    assert "gateway_cache_requests_total{" not in client.get("/metrics").get_data(as_text=True)


def test_a_failed_prediction_is_retried_on_the_model_server_not_answered_from_the_cache(make_app, upstream, png):
    scores = json.dumps({"predictions": [[i / 1000 for i in range(1000)]]}).encode()
    failing = routed(predict=StubReply(status=500, body=b'{"error": "out of memory"}'))
    upstream.reply = failing
    client = make_app(MODEL_SERVER_URL=upstream.url, GATEWAY_CACHE=CACHE).test_client()
    assert_error(post_image(client, png, path=PREDICT), 502, "out of memory")
    upstream.reply = routed(predict=StubReply(body=scores))
    calls = len(upstream.requests)
    recovered = post_image(client, png, path=PREDICT)
    assert recovered.headers[CACHE_HEADER] == MISS and ok(recovered)["predictions"][0]["score"] == pytest.approx(0.999)
    assert any(path.endswith(":predict") for _, path, _ in upstream.requests[calls:])
    # now it is stored: the model server is not asked again
    upstream.reply = failing
    assert post_image(client, png, path=PREDICT).headers[CACHE_HEADER] == HIT


def test_a_cached_image_gets_the_503_while_the_model_server_is_down(make_app, upstream, png):
    # the cache cannot know which version would answer, so it must not answer alone
    scores = json.dumps({"predictions": [[i / 1000 for i in range(1000)]]}).encode()
    upstream.reply = routed(predict=StubReply(body=scores))
    app = make_app(MODEL_SERVER_URL=upstream.url, GATEWAY_CACHE=CACHE)
    with app.app_context():
        get_model("imageclassifier").versions.ttl = 0  # re-read the status on every request
    client = app.test_client()
    assert post_image(client, png, path=PREDICT).headers[CACHE_HEADER] == MISS
    assert post_image(client, png, path=PREDICT).headers[CACHE_HEADER] == HIT
    upstream.reply = lambda method, path: StubReply(status=503, body=b'{"error": "overloaded"}')
    down = post_image(client, png, path=PREDICT)
    assert_error(down, 503, "overloaded")
    assert CACHE_HEADER not in down.headers


def test_an_unreachable_redis_answers_without_the_cache_and_counts_it(gateway_env, make_app):
    dead_redis = closed_port_url().replace("http", "redis") + "/0"
    client = make_app(**gateway_env, GATEWAY_CACHE=dead_redis).test_client()
    image = image_bytes(seed=22)
    answers = [post_image(client, image) for _ in range(2)]
    assert [r.headers[CACHE_HEADER] for r in answers] == [MISS, MISS]
    assert ok(answers[1]) == ok(answers[0])
    metrics = client.get("/metrics").get_data(as_text=True)
    # the first lookup failed; the cache then leaves Redis alone for a while instead of waiting on it
    assert sample(metrics, "gateway_cache_errors_total") == 1
    assert sample(metrics, "gateway_cache_requests_total", model=TINY, result=MISS) == 2


# --- a new version ----------------------------------------------------------------------------------------

def test_a_new_version_misses_then_answers_with_its_own_scores(make_app, tmp_path, model_server_factory):
    name = "swapped"
    base_path = tmp_path / name
    export_tiny_classifier(base_path, 1, input_size=TINY_SIZE, seed=1)
    (tmp_path / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(10)))
    config = tmp_path / "models.toml"
    config.write_text(f'[models.{name}]\nmodel_name = "{name}"\ninput_size = [32, 32]\nlabels = "labels.txt"\n')
    image = image_bytes(seed=19)
    path = f"/v1/models/{name}/predict"
    with model_server_factory(model_name=name, model_base_path=base_path) as server:
        settings = {"MODEL_SERVER_URL": server.url, "MODELS_CONFIG": str(config)}
        cached = make_app(**settings, GATEWAY_CACHE=CACHE).test_client()
        uncached = make_app(**settings).test_client()
        first = post_image(cached, image, path=path)
        assert first.headers[CACHE_HEADER] == MISS and ok(first)["model_version"] == 1
        assert post_image(cached, image, path=path).headers[CACHE_HEADER] == HIT

        export_tiny_classifier(base_path, 2, input_size=TINY_SIZE, seed=7)
        # version 1 may answer (from the cache) until the gateway sees version 2; its first answer from
        # version 2 must be computed by version 2, not read from version 1's entry
        swapped = poll(lambda: (r := post_image(cached, image, path=path)).get_json()["model_version"] == 2 and r,
                       timeout=60)
        assert swapped.headers[CACHE_HEADER] == MISS
        expected = ok(post_image(uncached, image, path=path))
        assert expected["model_version"] == 2
        assert ok(swapped) == expected
        assert ok(swapped)["predictions"] != ok(first)["predictions"]
        repeat = post_image(cached, image, path=path)
        assert repeat.headers[CACHE_HEADER] == HIT and ok(repeat) == expected


# --- redis, shared by two gunicorn gateways ------------------------------------------------------------------

@pytest.mark.redis
def test_two_gunicorn_gateways_share_a_redis_cache_with_the_rate_limits(gateway_env, redis_url):  # noqa: F811
    key = "cache-test-key-0123456789"
    env = {**gateway_env, "GATEWAY_CACHE": redis_url, "GATEWAY_CACHE_TTL": "120",
           "GATEWAY_RATELIMIT_STORAGE_URI": redis_url, "GATEWAY_API_KEYS": key}
    headers = {"X-API-Key": key, "Content-Type": "image/png"}
    image = image_bytes(seed=20)
    with start_gateway(env, wait_path="/readyz") as first, start_gateway(env, wait_path="/readyz") as second:
        miss = requests.post(first.url + TINY_PREDICT, data=image, headers=headers, timeout=30)
        hit = requests.post(second.url + TINY_PREDICT, data=image, headers=headers, timeout=30)
        assert (miss.headers[CACHE_HEADER], hit.headers[CACHE_HEADER]) == (MISS, HIT)
        assert hit.json() == miss.json() and miss.status_code == 200
        assert "X-RateLimit-Remaining" in hit.headers  # the limits live in the same Redis
    with redis.Redis.from_url(redis_url) as store:
        entries = list(store.scan_iter(match=f"{KEY_PREFIX}{TINY}:*"))
        assert len(entries) == 1
        assert 0 < store.pttl(entries[0]) <= 120_000
