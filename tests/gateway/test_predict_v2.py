"""The gateway with ``protocol = "v2"``: the same routes, preprocessing, labels and errors in front of
the real model server's Open Inference Protocol API as in front of its TF Serving REST API.

Every v2 route has a twin with the default protocol (REST) and the same settings; their answers
must be the same, and equal to TensorFlow's own in this process (``expected_tiny``).
"""

from __future__ import annotations

import numpy as np
import pytest

from flask_server.model_config import UNTRAINED_WARNING
from tests.gateway.conftest import TINY, TINY_1000, assert_error
from tests.gateway.test_predict import assert_same_top_k, expected_tiny, predict_ok  # noqa: F401 (fixture)

SIGNATURES = ("serving_uint8", "serving_bytes", "serving_default")


@pytest.fixture(scope="module")
def twin_config(tiny_models, tmp_path_factory):
    """One REST and one v2 route per signature for both tiny models, plus v2 routes that must fail."""
    labels = tiny_models.root / "tiny_labels.txt"
    tables = []
    for signature in SIGNATURES:
        for protocol in ("rest", "v2"):
            tables.append(f'[models.{TINY}_{signature}_{protocol}]\nmodel_name = "{TINY}"\nsignature = "{signature}"\n'
                          f'input_size = [32, 32]\nlabels = "{labels}"\ntop_k = 10\nprotocol = "{protocol}"\n')
            tables.append(f'[models.big_{signature}_{protocol}]\nmodel_name = "{TINY_1000}"\n'
                          f'signature = "{signature}"\ninput_size = [48, 48]\nprotocol = "{protocol}"\n')
    for protocol in ("rest", "v2"):
        tables.append(f'[models.ghost_{protocol}]\nmodel_name = "ghost"\ninput_size = [32, 32]\nprotocol = "{protocol}"\n')
        tables.append(f'[models.gone_{protocol}]\nmodel_name = "{TINY}"\nversion = 9\ninput_size = [32, 32]\n'
                      f'labels = "{labels}"\nprotocol = "{protocol}"\n')
        tables.append(f'[models.wrong_size_{protocol}]\nmodel_name = "{TINY_1000}"\ninput_size = [64, 64]\n'
                      f'protocol = "{protocol}"\n')
    path = tmp_path_factory.mktemp("v2-gateway") / "models.toml"
    path.write_text("".join(tables))
    return path


@pytest.fixture(scope="module")
def twin_client(model_server, twin_config):
    from flask_server.app import create_app
    from tests.gateway.conftest import TEST_RATE_LIMITS

    app = create_app({"MODEL_SERVER_URL": model_server.url, "MODELS_CONFIG": str(twin_config),
                      "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS})
    return app.test_client()


@pytest.mark.parametrize("signature", SIGNATURES)
def test_same_top_k_as_rest_and_as_tensorflow(twin_client, png, expected_tiny, signature):
    rest = predict_ok(twin_client, f"/v1/models/{TINY}_{signature}_rest/predict", data=png, content_type="image/png")
    v2 = predict_ok(twin_client, f"/v1/models/{TINY}_{signature}_v2/predict", data=png, content_type="image/png")
    assert [p["wnid"] for p in v2["predictions"]] == [p["wnid"] for p in rest["predictions"]]
    np.testing.assert_allclose([p["score"] for p in v2["predictions"]], [p["score"] for p in rest["predictions"]],
                               rtol=1e-6)
    assert v2["model_version"] == rest["model_version"] == 1
    assert_same_top_k(v2["predictions"], expected_tiny)


@pytest.mark.parametrize("signature", SIGNATURES)
def test_imagenet_labels_and_batches(twin_client, photo, png, signature):
    body = {"instances": [{"b64": __import__("base64").b64encode(image).decode()} for image in (photo, png)]}
    rest = predict_ok(twin_client, f"/v1/models/big_{signature}_rest/predict?top_k=5", json=body)
    v2 = predict_ok(twin_client, f"/v1/models/big_{signature}_v2/predict?top_k=5", json=body)
    assert len(v2["predictions"]) == 2
    for rest_row, v2_row in zip(rest["predictions"], v2["predictions"]):
        assert [(p["wnid"], p["label"]) for p in v2_row] == [(p["wnid"], p["label"]) for p in rest_row]
        np.testing.assert_allclose([p["score"] for p in v2_row], [p["score"] for p in rest_row], rtol=1e-5)


def test_model_listing_and_untrained_warning_through_v2(twin_client):
    models = {m["model"]: m for m in twin_client.get("/v1/models").get_json()["models"]}
    v2 = models[f"{TINY}_serving_uint8_v2"]
    assert (v2["state"], v2["model_version"], v2["warning"]) == ("AVAILABLE", 1, UNTRAINED_WARNING)
    assert "warning" not in models["big_serving_uint8_v2"]  # its export_info says "fixture" weights
    assert models["ghost_v2"]["state"] == models["ghost_rest"]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize("route, status, message", [
    ("ghost", 503, "ghost"),
    ("gone", 503, "version 9 of model 'tiny' is not AVAILABLE"),
    ("wrong_size", 502, "takes 48x48 images but the gateway is configured for 64x64"),
])
def test_same_errors_as_rest(twin_client, png, route, status, message):
    for protocol in ("rest", "v2"):
        response = twin_client.post(f"/v1/models/{route}_{protocol}/predict", data=png, content_type="image/png")
        assert_error(response, status, message)
