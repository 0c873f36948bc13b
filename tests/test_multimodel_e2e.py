"""Several models behind one gateway through auto_cmd.py, each configured by nothing but its name.

One model server (auto_cmd's model config file) serves an untrained export per preprocessing mode
(the networks of tests/test_export_modes.py) and the user's own 3-class ``.keras`` model exported
with a labels file; the gateway (auto_cmd's MODELS_CONFIG) learns each one's input size,
signature and labels from the model server's metadata. Checked through the gateway's HTTP API:
every route answers, scores equal in-process Keras (``load_img`` + ``preprocess_input`` +
``predict``) within 1e-5 in every mode, and the custom model answers its own labels.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import requests

from scripts import export_saved_model
from scripts.export_saved_model import export_keras_model
from serving_contract.applications import APPLICATIONS
from serving_contract.export import CUSTOM_MODEL, UNTRAINED_WEIGHTS, read_export_info
from serving_contract.labels import labels_from_info
from serving_contract.preprocessing import MODES
from tests.scripts.test_auto_cmd import READY_TIMEOUT, AutoCmd
from tests.scripts.test_export_modes import CASES, PHOTOS, TOLERANCE, keras_pipeline
from tests.support.tiny_models import build_tiny_classifier

pytestmark = [pytest.mark.e2e, pytest.mark.applications]  # MobileNetV2 / V3Small networks

FRUIT = ["apple", "blood orange", "cherry"]
FRUIT_SIZE = (32, 32)
PETS = [("p0", "cat"), ("p1", "dog"), ("p2", "rabbit"), ("p3", "hamster")]
SWAP_TIMEOUT = 60.0
TOP_K = 5


def mode_model_name(mode: str) -> str:
    return f"Mode_{mode}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(auto_cmd run, route -> (Keras' probabilities for PHOTOS, the export's labels))."""
    import keras

    root = tmp_path_factory.mktemp("multimodel")
    expected: dict[str, tuple[np.ndarray, list[tuple[str, str]]]] = {}
    flags: list[str] = []
    for mode in MODES:
        name, build, is_application = CASES[mode]
        keras.utils.set_random_seed(0)
        model = build(keras)
        info = {"model": name if is_application else CUSTOM_MODEL, "preprocessing": mode,
                "weights": UNTRAINED_WEIGHTS}
        version_dir = export_keras_model(model, root / mode_model_name(mode), info=info, log=lambda _msg: None)
        size = tuple(int(d) for d in model.input_shape[1:3])
        _, probabilities = keras_pipeline(keras, model, APPLICATIONS[name].module, size)
        expected[mode_model_name(mode).lower()] = (probabilities, labels_from_info(read_export_info(version_dir)))
        flags += ["--model", f"{mode_model_name(mode)}={root / mode_model_name(mode)}"]

    # The user's own model: a .keras file and a labels file, through the export script's command line.
    fruit = build_tiny_classifier(FRUIT_SIZE, classes=len(FRUIT), seed=3, name="fruit")
    fruit.save(root / "fruit.keras")
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in FRUIT))
    assert export_saved_model.main(["--model", str(root / "fruit.keras"), "--labels", str(root / "labels.txt"),
                                    "--base-path", str(root / "Fruit")]) == 0
    # No sidecar, no --preprocessing: the exporter's default mode, tf (MobileNetV2's module).
    _, probabilities = keras_pipeline(keras, fruit, "mobilenet_v2", FRUIT_SIZE)
    expected["fruit"] = (probabilities, [(label, label) for label in FRUIT])
    flags += ["--model", f"Fruit={root / 'Fruit'}"]

    # A model whose next version changes its input size and classes (test_a_new_version_...).
    export_keras_model(build_tiny_classifier(FRUIT_SIZE, classes=3, seed=4), root / "Pets", 1,
                       log=lambda _msg: None, labels=PETS[:3])
    flags += ["--model", f"Pets={root / 'Pets'}"]

    run = AutoCmd(root / "Fruit", None, ["--no-input", *flags], stdin=subprocess.DEVNULL)
    try:
        run.wait_for_line("running until SIGTERM", READY_TIMEOUT)
        run.root = root
        yield run, expected
    finally:
        run.kill()


def predict(run: AutoCmd, route: str, photo, top_k: int | None = None) -> requests.Response:
    url = f"http://127.0.0.1:{run.gw_port}/v1/models/{route}/predict"
    return requests.post(url, params={} if top_k is None else {"top_k": top_k},
                         files={"file": (photo.name, photo.read_bytes())}, timeout=60)


def test_every_model_gets_a_route_at_its_lowercased_name(stack):
    run, expected = stack
    listed = requests.get(f"http://127.0.0.1:{run.gw_port}/v1/models", timeout=10).json()["models"]
    assert {m["model"]: m["model_name"] for m in listed} == {
        **{mode_model_name(mode).lower(): mode_model_name(mode) for mode in MODES}, "fruit": "Fruit", "pets": "Pets"}
    # the classes each version has, for the web page's top_k
    assert {m["model"]: m["classes"] for m in listed} == {
        **{route: len(labels) for route, (_, labels) in expected.items()}, "pets": 3}
    # auto_cmd waited for each model, and printed every route
    assert "[model_server] Fruit: AVAILABLE after" in "".join(run.lines)
    assert f"POST http://127.0.0.1:{run.gw_port}/v1/models/mode_caffe/predict" in run.output()


@pytest.mark.parametrize("mode", MODES)
def test_gateway_scores_equal_in_process_keras(stack, mode):
    run, expected = stack
    probabilities, labels = expected[mode_model_name(mode).lower()]
    index = {ident: i for i, (ident, _) in enumerate(labels)}
    for row, photo in zip(probabilities, PHOTOS, strict=True):
        response = predict(run, mode_model_name(mode).lower(), photo, TOP_K)
        assert response.status_code == 200, response.text
        answer = response.json()["predictions"]
        scores = np.array([p["score"] for p in answer])
        # Keras' own k best scores, and Keras' score for each class the gateway named
        np.testing.assert_allclose(scores, -np.sort(-row)[:TOP_K], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(scores, [row[index[p["wnid"]]] for p in answer], rtol=0, atol=TOLERANCE)
        assert [p["label"] for p in answer] == [labels[index[p["wnid"]]][1] for p in answer]


def test_custom_model_answers_its_own_labels(stack):
    run, expected = stack
    probabilities, _ = expected["fruit"]
    for row, photo in zip(probabilities, PHOTOS, strict=True):
        response = predict(run, "fruit", photo)
        assert response.status_code == 200, response.text
        answer = response.json()["predictions"]
        # the route's top_k (5) is capped at the model's 3 classes, named by the labels file
        assert [p["label"] for p in answer] == [FRUIT[i] for i in np.argsort(-row, kind="stable")]
        np.testing.assert_allclose([p["score"] for p in answer], -np.sort(-row), rtol=0, atol=TOLERANCE)
    too_many = predict(run, "fruit", PHOTOS[0], top_k=4)
    assert too_many.status_code == 400 and "top_k must be between 1 and 3" in too_many.json()["error"]


def test_a_new_version_with_another_size_and_classes_is_served_from_that_version_on(stack):
    run, _ = stack
    first = predict(run, "pets", PHOTOS[0])
    assert first.status_code == 200 and {p["label"] for p in first.json()["predictions"]} == {"cat", "dog", "rabbit"}
    export_keras_model(build_tiny_classifier((40, 40), classes=4, seed=6), run.root / "Pets", 2,
                       log=lambda _msg: None, labels=PETS)
    deadline = time.monotonic() + SWAP_TIMEOUT
    while (answer := predict(run, "pets", PHOTOS[0], top_k=4)).json().get("model_version") != 2:
        # until the swap, version 1 answers: top_k=4 is more than its 3 classes
        assert answer.status_code == 400 and "between 1 and 3" in answer.json()["error"], answer.text
        assert time.monotonic() < deadline, f"version 2 not served after {SWAP_TIMEOUT} s"
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert {p["label"] for p in answer.json()["predictions"]} == {label for _, label in PETS}
