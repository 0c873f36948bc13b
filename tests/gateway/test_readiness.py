"""Readiness and version reporting across a model's life: no version yet -> first export -> hot swap."""

from __future__ import annotations

import time

import pytest

from tests.gateway.conftest import assert_error, image_bytes
from tests.support.tiny_models import export_tiny_classifier

LATE = "late"
SIZE = (32, 32)


def poll(check, timeout: float = 30.0, interval: float = 0.2):
    """``check()``'s first truthy result within ``timeout`` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.mark.e2e
def test_readyz_turns_200_when_the_first_version_loads_and_versions_follow_hot_swaps(make_app, tmp_path,
                                                                                     model_server_factory):
    base_path = tmp_path / LATE
    base_path.mkdir()
    (tmp_path / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(10)))
    config = tmp_path / "models.toml"
    config.write_text(f'[models.{LATE}]\nmodel_name = "{LATE}"\ninput_size = [32, 32]\nlabels = "labels.txt"\n')
    with model_server_factory(extra_args=[f"--model_name={LATE}", f"--model_base_path={base_path}"]) as server:
        # Like tensorflow_model_server, ours opens its REST port only once the first version has
        # loaded, so until then the gateway sees "connection refused": not ready either way.
        client = make_app(MODEL_SERVER_URL=server.url, MODELS_CONFIG=str(config)).test_client()
        image = image_bytes()

        # no version on disk yet: not ready, and predictions say why (503)
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        [model] = not_ready.get_json()["models"]
        assert model["model"] == LATE and model["state"] == "UNAVAILABLE" and model["error"]
        assert client.get("/v1/models").status_code == 200
        assert_error(client.post(f"/v1/models/{LATE}/predict", data=image, content_type="image/png"), 503, "")

        export_tiny_classifier(base_path, 1, input_size=SIZE, seed=1)
        poll(lambda: client.get("/readyz").status_code == 200, timeout=60)
        first = client.post(f"/v1/models/{LATE}/predict", data=image, content_type="image/png").get_json()
        assert first["model_version"] == 1

        # a new version replaces the old one: within a couple of seconds it answers, and says so
        export_tiny_classifier(base_path, 2, input_size=SIZE, seed=7)
        second = poll(lambda: (body := client.post(f"/v1/models/{LATE}/predict", data=image,
                                                   content_type="image/png").get_json())["model_version"] == 2
                      and body)
        assert second["predictions"] != first["predictions"]
        assert client.get(f"/v1/models/{LATE}").get_json()["model_version"] == 2
