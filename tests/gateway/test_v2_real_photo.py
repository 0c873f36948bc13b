"""The issue's proof on real weights: a real photo through a real gunicorn gateway and a real model
server answers the same top-5 over the Open Inference Protocol (KServe v2) as over TF Serving's
REST API, and that top-1 is the photo's known class.

The MobileNetV2 ImageNet weights are read in place from ``../shared/models`` (skipped where absent);
the expected classes are the ones measured with Keras in that folder's README.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from scripts.processes import REPO_ROOT
from tests.gateway.conftest import TEST_IMAGES, TEST_RATE_LIMITS
from tests.support.processes import start_gateway

pytestmark = [pytest.mark.timeout(300), pytest.mark.e2e]

WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_imagenet.weights.h5"
MODEL = "mobilenet_v2"
# photo -> (wnid, label) Keras' MobileNetV2 with these weights ranks first (shared/models/README.md).
KNOWN_TOP_1 = {"chelsea.jpg": "n02124075", "coffee.png": "n07920052"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, model_server_factory):
    if not WEIGHTS.is_file():
        pytest.skip(f"real MobileNetV2 weights not found at {WEIGHTS}")
    import keras

    from scripts.export_saved_model import export_keras_model

    root = tmp_path_factory.mktemp("mobilenet")
    export_keras_model(keras.applications.MobileNetV2(weights=str(WEIGHTS)), root / MODEL, 1,
                       info={"weights": "imagenet", "preprocessing": "tf"}, log=lambda _msg: None)
    config = root / "models.toml"
    config.write_text("".join(f'[models.{protocol}]\nmodel_name = "{MODEL}"\ninput_size = [224, 224]\n'
                              f'protocol = "{protocol}"\n' for protocol in ("rest", "v2")))
    with model_server_factory(model_name=MODEL, model_base_path=root / MODEL) as model_server, \
            start_gateway({"MODEL_SERVER_URL": model_server.url, "MODELS_CONFIG": str(config),
                           "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS}, wait_path="/readyz") as gateway_process:
        yield gateway_process


@pytest.mark.parametrize("photo", sorted(KNOWN_TOP_1))
def test_same_top5_through_v2_as_through_rest(gateway, photo):
    data = (TEST_IMAGES / photo).read_bytes()
    answers = {}
    for route in ("rest", "v2"):
        response = requests.post(f"{gateway.url}/v1/models/{route}/predict", data=data,
                                 headers={"Content-Type": "image/jpeg" if photo.endswith(".jpg") else "image/png"},
                                 timeout=60)
        assert response.status_code == 200, response.text
        answers[route] = response.json()["predictions"]
    rest, v2 = answers["rest"], answers["v2"]
    assert len(v2) == 5
    assert [(p["wnid"], p["label"]) for p in v2] == [(p["wnid"], p["label"]) for p in rest]
    np.testing.assert_allclose([p["score"] for p in v2], [p["score"] for p in rest], rtol=1e-5)
    assert v2[0]["wnid"] == KNOWN_TOP_1[photo]
