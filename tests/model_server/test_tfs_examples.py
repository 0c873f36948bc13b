"""TF Serving's own documentation, run against ``python -m model_server`` with TF Serving's test models.

Every curl of ``api_rest.md`` ("Example" section, model ``saved_model_half_plus_three``) and of the
Docker guide (``docker.md``, model ``half_plus_two``) that applies to these models, each compared with
the answer the documentation prints. TF Serving's models are read in place (skipped, with the
reason, where they are absent); a TF1 model written with ``simple_save`` (as the tutorial exports)
is served beside them. Also: adding a TF1 model through ``--model_config_file`` reload.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.model_server.conftest import (SIMPLE_SAVE_BIAS, SIMPLE_SAVE_WEIGHTS, export_simple_save, model_config_text,
                                         tfs_model)
from tests.support.processes import model_available, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# (method, path, body, documented status, documented answer), from api_rest.md and docker.md.
DOCUMENTED = [
    pytest.param("GET", "/v1/models/saved_model_half_plus_three", None, 200,
                 {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                            "status": {"error_code": "OK", "error_message": ""}}]},
                 id="api_rest-status"),
    pytest.param("POST", "/v1/models/saved_model_half_plus_three:predict", '{"instances": [1.0,2.0,5.0]}', 200,
                 {"predictions": [3.5, 4.0, 5.5]}, id="api_rest-predict"),
    pytest.param("POST", "/v1/models/saved_model_half_plus_three:regress",
                 '{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}', 200,
                 {"results": [3.5, 4.0]}, id="api_rest-regress"),
    pytest.param("POST", "/v1/models/half:predict", '{"instances": [1.0,5.0]}', 404,
                 {"error": "Servable not found for request: Latest(half)"}, id="api_rest-not-found"),
    pytest.param("POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0, 2.0, 5.0]}', 200,
                 {"predictions": [2.5, 3.0, 4.5]}, id="docker-predict"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_server_factory):
    root = tmp_path_factory.mktemp("tfs")
    export_simple_save(root / "simple_save" / "1")
    models = {"half_plus_two": tfs_model("half_plus_two"),
              "saved_model_half_plus_three": tfs_model("half_plus_three"),
              "half_plus_two_tf2": tfs_model("half_plus_two_tf2"),
              "simple_save": root / "simple_save"}
    config = root / "models.config"
    config.write_text(model_config_text(models))
    with model_server_factory(extra_args=[f"--model_config_file={config}"], wait_for="half_plus_two") as process:
        for name in models:
            wait_until(process, f"/v1/models/{name}", 60, model_available(name))
        yield process


@pytest.mark.parametrize("method, path, body, status, answer", DOCUMENTED)
def test_documented_curl(server, method, path, body, status, answer):
    # curl -d sends application/x-www-form-urlencoded; TF Serving ignores the content type, so do we
    response = requests.request(method, server.url + path, data=body, timeout=30,
                                headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == answer


def test_readme_curl_answers_exactly(server):
    response = requests.post(server.url + "/v1/models/half_plus_two:predict",
                             data='{"instances": [1.0, 2.0, 5.0]}', timeout=30)
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert [type(v) for v in response.json()["predictions"]] == [float] * 3


@pytest.mark.parametrize("model", ["half_plus_two", "saved_model_half_plus_three", "half_plus_two_tf2"])
@pytest.mark.parametrize("instances", [[1.0, 2.0], [[1.0], [2.0]]])
def test_tensorflow_decides_the_shape(server, model, instances):
    offset = 3.0 if "three" in model else 2.0
    response = requests.post(server.url + f"/v1/models/{model}:predict", json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    expected = (0.5 * np.array(instances) + offset).tolist()
    assert response.json() == {"predictions": expected}


def test_half_plus_three_regresses_on_its_default_name_too(server):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 4.0}], "context": {"x": 9.0}}
    response = requests.post(server.url + "/v1/models/saved_model_half_plus_three:regress", json=body, timeout=30)
    assert response.json() == {"results": [5.0]}  # the example's x wins over the context's


def test_half_plus_two_classifies_and_regresses_every_signature(server):
    url = server.url + "/v1/models/half_plus_two"
    assert requests.post(url + ":classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
                         timeout=30).json() == {"results": [[["", 3.0]]]}
    for signature, expected in (("regress_x_to_y", 3.0), ("regress_x_to_y2", 4.0)):  # 0.5x + 2, 0.5x + 3
        body = {"signature_name": signature, "examples": [{"x": 2.0}]}
        assert requests.post(url + ":regress", json=body, timeout=30).json() == {"results": [expected]}


def test_tensorflow_errors_are_400_with_tensorflow_message(server):
    response = requests.post(server.url + "/v1/models/simple_save:predict", json={"instances": [[1.0, 2.0]]},
                              timeout=30)
    assert response.status_code == 400
    assert "Matrix size-incompatible" in response.json()["error"]


def test_tf1_simple_save_model_over_rest(server):
    x = [[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]
    response = requests.post(server.url + "/v1/models/simple_save:predict", json={"instances": x}, timeout=30)
    assert response.status_code == 200, response.text
    logits = np.array(x) @ np.array(SIMPLE_SAVE_WEIGHTS) + np.array(SIMPLE_SAVE_BIAS)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(response.json()["predictions"]), expected, rtol=1e-5)
    metadata = requests.get(server.url + "/v1/models/simple_save/metadata", timeout=30).json()
    assert metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]["name"] == "x:0"


def test_config_reload_adds_a_tf1_model(tmp_path, model_server_factory):
    config = tmp_path / "models.config"
    config.write_text(model_config_text({"half_plus_two": tfs_model("half_plus_two")}))
    three = tfs_model("half_plus_three")
    args = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    with model_server_factory(extra_args=args, wait_for="half_plus_two") as server:
        assert requests.get(server.url + "/v1/models/half_plus_three", timeout=10).status_code == 404
        config.write_text(model_config_text({"half_plus_two": tfs_model("half_plus_two"), "half_plus_three": three}))
        wait_until(server, "/v1/models/half_plus_three", 60, model_available("half_plus_three"))
        response = requests.post(server.url + "/v1/models/half_plus_three:predict", json={"instances": [1.0, 2.0]},
                                 timeout=30)
        assert response.json() == {"predictions": [3.5, 4.0]}
        assert requests.post(server.url + "/v1/models/half_plus_two:predict", json={"instances": [2.0]},
                             timeout=30).json() == {"predictions": [3.0]}
