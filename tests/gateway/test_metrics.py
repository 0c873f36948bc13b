"""/metrics: counters and histograms move for the right model, route and status; the in-flight gauge
returns to zero; the backend timer records; several gunicorn workers add up in multiprocess mode."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flask_server.app import create_app
from flask_server.metrics import backend_timer, observe_backend_call
from tests.support.processes import start_gateway

PREDICT_ROUTE = "/v1/models/<model_route>/predict"
MODEL = "imageclassifier"  # the gateway route serving conftest's tiny 1000-class model


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` whose labels include ``labels`` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.get_data(as_text=True)


@pytest.fixture
def metered(gateway_env):
    """A fresh in-process gateway (its own registry) in front of the real model server."""
    return create_app(gateway_env).test_client()


def test_a_prediction_moves_every_metric(metered, photo):
    before = scrape(metered)
    response = metered.post(f"/v1/models/{MODEL}/predict", data=photo, content_type="image/jpeg")
    assert response.status_code == 200, response.json
    after = scrape(metered)

    labels = {"model": MODEL, "route": PREDICT_ROUTE}
    assert sample(after, "gateway_requests_total", status="200", **labels) == \
        sample(before, "gateway_requests_total", status="200", **labels) + 1
    assert sample(after, "gateway_request_duration_seconds_count", **labels) == \
        sample(before, "gateway_request_duration_seconds_count", **labels) + 1
    assert sample(after, "gateway_request_duration_seconds_sum", **labels) > \
        sample(before, "gateway_request_duration_seconds_sum", **labels)
    assert sample(after, "gateway_request_size_bytes_sum", route=PREDICT_ROUTE) == \
        sample(before, "gateway_request_size_bytes_sum", route=PREDICT_ROUTE) + len(photo)
    assert sample(after, "gateway_response_size_bytes_sum", route=PREDICT_ROUTE) >= \
        sample(before, "gateway_response_size_bytes_sum", route=PREDICT_ROUTE) + len(response.data)
    assert sample(after, "gateway_backend_request_duration_seconds_count", model=MODEL) > \
        sample(before, "gateway_backend_request_duration_seconds_count", model=MODEL)
    # only the /metrics scrape itself is in flight while it renders
    assert sample(after, "gateway_requests_in_flight") == 1


def test_errors_are_counted_by_status_without_inventing_models(metered):
    metered.post(f"/v1/models/{MODEL}/predict", data=b"not an image", content_type="image/jpeg")
    metered.post("/v1/models/no-such-model-xyz/predict", json={"b64": "AAAA"})
    text = scrape(metered)
    assert sample(text, "gateway_requests_total", route=PREDICT_ROUTE, status="400") == 1
    assert sample(text, "gateway_requests_total", route=PREDICT_ROUTE, status="404", model="") == 1
    # a client-chosen model name never becomes a label value (bounded cardinality)
    assert "no-such-model-xyz" not in text


def test_unmatched_paths_share_one_route_label(make_app):
    client = make_app().test_client()
    for path in ("/a", "/b/c", "/d"):
        assert client.get(path).status_code == 404
    assert sample(scrape(client), "gateway_requests_total", route="<unmatched>", status="404") == 3


def test_each_app_has_its_own_registry(make_app):
    first, second = make_app().test_client(), make_app().test_client()
    first.get("/healthz")
    assert sample(scrape(first), "gateway_requests_total", route="/healthz") == 1
    assert sample(scrape(second), "gateway_requests_total", route="/healthz") == 0


def test_backend_timer_records_even_when_the_call_fails(make_app):
    app = make_app()
    with app.app_context():
        with pytest.raises(RuntimeError), backend_timer("m"):
            raise RuntimeError("model server down")
        observe_backend_call("m", 0.25)
    text = scrape(app.test_client())
    assert sample(text, "gateway_backend_request_duration_seconds_count", model="m") == 2
    assert sample(text, "gateway_backend_request_duration_seconds_sum", model="m") >= 0.25


def test_backend_helpers_are_harmless_outside_an_app():
    observe_backend_call("m", 0.1)
    with backend_timer("m"):
        pass


def test_in_flight_returns_to_zero_after_errors(make_app):
    client = make_app().test_client()
    client.post("/v1/models/imageclassifier/predict", data=b"x", content_type="text/plain")  # 415
    client.get("/nope")
    assert sample(scrape(client), "gateway_requests_in_flight") == 1  # the scrape itself


@pytest.mark.e2e
def test_gunicorn_workers_add_up_in_multiprocess_mode(gateway_env, tmp_path, photo):
    env = {**gateway_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    requests_made = 12
    with start_gateway(env, workers=2, threads=2, wait_path="/readyz") as gateway:
        for _ in range(requests_made):
            response = requests.post(f"{gateway.url}/v1/models/{MODEL}/predict", data=photo,
                                     headers={"Content-Type": "image/jpeg"}, timeout=30)
            assert response.status_code == 200
        # whichever worker answers the scrape, it reports both workers' requests
        for _ in range(4):
            text = requests.get(gateway.url + "/metrics", timeout=10).text
            assert sample(text, "gateway_requests_total", model=MODEL, route=PREDICT_ROUTE,
                          status="200") == requests_made
