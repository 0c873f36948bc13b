"""Predictions end to end: the in-process gateway app in front of the real model server serving two
tiny models, every input form, both routes, batches, and equality with TensorFlow in this process."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import threading
import time

import numpy as np
import pytest

from flask_server.app import create_app
from flask_server.model_config import UNTRAINED_WARNING
from flask_server.preprocess import load_and_preprocess
from serving_contract.export import SIGNATURES
from tests.gateway.conftest import (STABLE_LABEL, TINY, TINY_1000, TINY_1000_SIZE, TINY_LABELS, TINY_SIZE,
                                    assert_error, image_bytes)

TINY_PREDICT = f"/v1/models/{TINY}/predict"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def predict_ok(client, path: str, **kwargs) -> dict:
    response = client.post(path, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture(scope="module")
def expected_tiny(tiny_models, png):
    """Top-10 of the tiny model computed in this process with TensorFlow on flask_server's preprocessing."""
    return tensorflow_top_k(tiny_models.paths[TINY] / "1", load_and_preprocess(png, TINY_SIZE), TINY_LABELS, 10)


def tensorflow_top_k(version_dir, image: np.ndarray, labels, k: int) -> list[dict]:
    import tensorflow as tf

    model = tf.saved_model.load(str(version_dir))
    scores = model.signatures["serving_default"](image=tf.constant(image[None]))["probabilities"].numpy()[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"wnid": labels[i][0], "label": labels[i][1], "score": float(scores[i])} for i in order]


def assert_same_top_k(actual: list[dict], expected: list[dict]) -> None:
    assert [(p["wnid"], p["label"]) for p in actual] == [(p["wnid"], p["label"]) for p in expected[:len(actual)]]
    np.testing.assert_allclose([p["score"] for p in actual], [p["score"] for p in expected[:len(actual)]],
                               rtol=0, atol=1e-5)


def multipart(field: str, data: bytes) -> dict:
    return {"data": {field: (io.BytesIO(data), "image.png")}, "content_type": "multipart/form-data"}


# test that every accepted input form gives the same answer as TensorFlow in this process
@pytest.mark.parametrize("form", ["json", "urlsafe", "data_url", "whitespace", "file", "image_field",
                                  "raw_body", "form_b64"])
def test_input_forms(served_client, png, expected_tiny, form):
    encoded = b64(png)
    kwargs = {
        "json": {"json": {"b64": encoded}},
        "urlsafe": {"json": {"b64": base64.urlsafe_b64encode(png).decode().rstrip("=")}},
        "data_url": {"json": {"b64": f"data:image/png;base64,{encoded}"}},
        "whitespace": {"json": {"b64": "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))}},
        "file": multipart("file", png),
        "image_field": multipart("image", png),
        "raw_body": {"data": png, "content_type": "image/png"},
        "form_b64": {"data": {"b64": encoded}},
    }[form]
    body = predict_ok(served_client, f"{TINY_PREDICT}?top_k=10", **kwargs)
    assert body["model"] == TINY and body["model_version"] == 1
    assert body["warning"] == UNTRAINED_WARNING  # tiny models are exported with untrained weights
    assert len(body["predictions"]) == 10
    assert_same_top_k(body["predictions"], expected_tiny)


def test_imagenet_model_matches_tensorflow(served_client, tiny_models, photo):
    from flask_server.labels import load_labels

    expected = tensorflow_top_k(tiny_models.paths[TINY_1000] / "1", load_and_preprocess(photo, TINY_1000_SIZE),
                                load_labels("imagenet"), 5)
    body = predict_ok(served_client, "/v1/models/imageclassifier/predict", data=photo, content_type="image/jpeg")
    assert "warning" not in body  # exported with weights "fixture", not "untrained"
    assert_same_top_k(body["predictions"], expected)


def test_two_models_behind_two_routes(served_client, png):
    tiny = predict_ok(served_client, TINY_PREDICT, json={"b64": b64(png)})
    imagenet = predict_ok(served_client, "/v1/models/imageclassifier/predict", json={"b64": b64(png)})
    # the labels file is `id<TAB>label`: the id and the label come back as separate fields
    labels = dict(TINY_LABELS)
    for p in tiny["predictions"]:
        assert p["wnid"] in labels and p["label"] == labels[p["wnid"]] != p["wnid"]
        assert "\t" not in p["wnid"] + p["label"]
    assert all(p["wnid"].startswith("n") and len(p["wnid"]) == 9 for p in imagenet["predictions"])
    assert len(tiny["predictions"]) == len(imagenet["predictions"]) == 5


def test_json_float_signature_equals_the_bytes_fast_path(served_client, png):
    fast = predict_ok(served_client, f"{TINY_PREDICT}?top_k=3", json={"b64": b64(png)})
    floats = predict_ok(served_client, "/v1/models/tiny_json/predict", json={"b64": b64(png)})  # top_k = 3
    assert_same_top_k(floats["predictions"], fast["predictions"])


def test_batch_equals_single_requests(served_client):
    images = [image_bytes(seed=s) for s in range(3)]
    batch = predict_ok(served_client, TINY_PREDICT, json={"instances": [{"b64": b64(i)} for i in images]})
    assert len(batch["predictions"]) == 3
    for image, predictions in zip(images, batch["predictions"]):
        single = predict_ok(served_client, TINY_PREDICT, data=image, content_type="image/png")
        assert_same_top_k(predictions, single["predictions"])


@pytest.mark.parametrize("slots", [1, 2])
def test_decode_concurrency_bounds_images_decoded_at_once(gateway_env, monkeypatch, slots):
    """8 concurrent requests: never more than GATEWAY_DECODE_CONCURRENCY decodes at a time, and exactly
    that many when there is work (the real decoder runs; a pause inside widens the window)."""
    from flask_server.served_model import ServedModel

    inside, most, calls = [0], [0], [0]
    lock = threading.Lock()
    full = threading.Barrier(slots, timeout=10)
    real = ServedModel.load_image

    def counting(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            first = calls[0] < slots
            calls[0] += 1
        try:
            if first:
                full.wait()  # the first `slots` calls meet here: proves they run together
            time.sleep(0.02)
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(ServedModel, "load_image", counting)
    app = create_app({**gateway_env, "GATEWAY_DECODE_CONCURRENCY": str(slots)})
    images = [image_bytes(seed=s) for s in range(8)]

    def post(image: bytes) -> int:
        return app.test_client().post(TINY_PREDICT, data=image, content_type="image/png").status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(post, images)) == [200] * 8
    assert most[0] == slots


def test_batch_with_one_bad_image_names_it(served_client, png):
    body = {"instances": [{"b64": b64(png)}, {"b64": b64(b"not an image")}]}
    assert_error(served_client.post(TINY_PREDICT, json=body), 400, "instances[1]: not a supported image")


def test_top_k_range_follows_the_models_classes(served_client, png):
    assert len(predict_ok(served_client, f"{TINY_PREDICT}?top_k=1", json={"b64": b64(png)})["predictions"]) == 1
    assert_error(served_client.post(f"{TINY_PREDICT}?top_k=11", json={"b64": b64(png)}), 400,
                 "top_k must be between 1 and 10 for model 'tiny'")


def test_tutorial_route_answers_a_bare_list(served_client, photo):
    for kwargs in ({"data": {"b64": b64(photo)}}, {"json": {"b64": b64(photo)}}):
        rows = predict_ok(served_client, "/imageclassifier/predict/", **kwargs)
        assert len(rows) == 5 and all(len(row) == 3 for row in rows)
        wnid, label, score = rows[0]
        assert wnid.startswith("n") and isinstance(label, str) and 0 <= score <= 1
        assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


def test_models_list_reports_state_version_and_warning(served_client):
    models = {m["model"]: m for m in served_client.get("/v1/models").get_json()["models"]}
    assert set(models) == {TINY, "tiny_json", "imageclassifier"}
    assert all(m["state"] == "AVAILABLE" and m["model_version"] == 1 for m in models.values())
    assert models[TINY]["warning"] == UNTRAINED_WARNING and "warning" not in models["imageclassifier"]
    assert models["imageclassifier"]["model_name"] == TINY_1000
    assert served_client.get(f"/v1/models/{TINY}").get_json()["state"] == "AVAILABLE"
    ready = served_client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["ready"] is True


def test_model_unknown_to_the_model_server_is_503(make_app, model_server, tmp_path, png):
    config = tmp_path / "models.toml"
    config.write_text('[models.ghost]\nmodel_name = "ghost"\ninput_size = [32, 32]\n')
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config)).test_client()
    assert_error(client.post("/v1/models/ghost/predict", data=png, content_type="image/png"), 503, "ghost")
    assert client.get("/readyz").status_code == 503


def test_wrong_input_size_in_the_config_is_a_502_naming_the_key(make_app, model_server, tmp_path, png):
    config = tmp_path / "models.toml"
    config.write_text(f'[models.wrong]\nmodel_name = "{TINY_1000}"\ninput_size = [64, 64]\n')
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config)).test_client()
    assert_error(client.post("/v1/models/wrong/predict", data=png, content_type="image/png"), 502,
                 "takes 48x48 images but the gateway is configured for 64x64 (models.wrong.input_size")


def test_signature_missing_from_the_export_is_a_502_naming_the_key(make_app, model_server, tmp_path, png):
    # What a version exported before serving_uint8 existed looks like to the gateway's default config.
    config = tmp_path / "models.toml"
    config.write_text(f'[models.old]\nmodel_name = "{TINY_1000}"\nsignature = "serving_gone"\ninput_size = [48, 48]\n')
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config)).test_client()
    assert_error(client.post("/v1/models/old/predict", data=png, content_type="image/png"), 502,
                 f"has no signature 'serving_gone' (it has {', '.join(sorted(SIGNATURES))}); export "
                 "it again with scripts/export_saved_model.py or set models.old.signature")


def test_uint8_float32_and_json_signatures_give_the_same_scores(make_app, model_server, tmp_path, photo):
    """The gateway's three ways to the model: uint8 scaled in the graph, float32 scaled in numpy,
    float JSON; the same image must score the same. The tiny model's 1000 scores are all near 0.001,
    so they are compared relatively; a float32 route scaled the wrong way ("torch") must differ, or
    this test could not tell them apart."""
    routes = {"serving_uint8": "serving_uint8", "serving_bytes": "serving_bytes",
              "serving_default": "serving_default", "wrong_scaling": "serving_bytes"}
    config = tmp_path / "models.toml"
    config.write_text("".join(f'[models.{route}]\nmodel_name = "{TINY_1000}"\nsignature = "{signature}"\n'
                              f'input_size = [48, 48]\ntop_k = 1000\n'
                              + ('preprocessing = "torch"\n' if route == "wrong_scaling" else "")
                              for route, signature in routes.items()))
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config)).test_client()
    scores = {}
    for route in routes:
        body = predict_ok(client, f"/v1/models/{route}/predict", data=photo, content_type="image/jpeg")
        by_class = {p["wnid"]: p["score"] for p in body["predictions"]}
        scores[route] = np.array([by_class[wnid] for wnid in sorted(by_class)])
    for route in ("serving_bytes", "serving_default"):
        np.testing.assert_allclose(scores[route], scores["serving_uint8"], rtol=1e-5, atol=0)
    assert (np.abs(scores["wrong_scaling"] / scores["serving_uint8"] - 1)).max() > 1e-2


def test_pinned_version_and_version_label_routes(make_app, model_server, tiny_models, png):
    labels = tiny_models.root / "tiny_labels.txt"
    config = tiny_models.root / "pinned.toml"
    config.write_text(f'[models.by_label]\nmodel_name = "{TINY}"\nversion_label = "{STABLE_LABEL}"\n'
                      f'input_size = [32, 32]\nlabels = "{labels}"\n'
                      f'[models.by_version]\nmodel_name = "{TINY}"\nversion = 1\ninput_size = [32, 32]\nlabels = "{labels}"\n'
                      f'[models.gone]\nmodel_name = "{TINY}"\nversion = 9\ninput_size = [32, 32]\nlabels = "{labels}"\n')
    client = make_app(MODEL_SERVER_URL=model_server.url, MODELS_CONFIG=str(config)).test_client()
    for route in ("by_label", "by_version"):
        assert predict_ok(client, f"/v1/models/{route}/predict", data=png, content_type="image/png")["model_version"] == 1
    assert_error(client.post("/v1/models/gone/predict", data=png, content_type="image/png"), 503,
                 "version 9 of model 'tiny' is not AVAILABLE")
