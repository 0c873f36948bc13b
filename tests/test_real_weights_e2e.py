"""Real ImageNet weights end to end: a real photo gets its right label through the whole stack.

``scripts/download_model.py --model MobileNetV2 --weights FILE`` with the real MobileNetV2 weights
kept beside the project (``../shared/models/mobilenet_v2/``, data only, never committed; on a
machine with internet Keras' own download is used instead), then ``export_saved_model.py``, then
``auto_cmd.py --model-base-path ... --model-name MobileNetV2`` (model server + gateway, real
processes on 127.0.0.1). Through the gateway: ``chelsea.jpg`` is a cat (Egyptian cat, tabby or
tiger cat) and ``coffee.png`` an espresso, and every score equals in-process Keras
(``load_img`` + ``preprocess_input`` + ``predict`` on the same .keras model) within 1e-5.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import requests

from scripts.download_model import weights_host_reachable
from serving_contract.applications import APPLICATIONS
from serving_contract.labels import imagenet_labels
from tests.scripts.test_auto_cmd import READY_TIMEOUT, AutoCmd
from tests.support.processes import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.applications]  # a full MobileNetV2

MODEL = "MobileNetV2"
SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_imagenet.weights.h5"
CAT_LABELS = {"Egyptian_cat", "tabby", "tiger_cat"}
PHOTOS = {"chelsea.jpg": CAT_LABELS, "coffee.png": {"espresso"}}
TOLERANCE = 1e-5
TOP_K = 5
STEP_TIMEOUT = 600


def weights_source() -> str:
    """The weights to build MobileNetV2 with: the shared file, else Keras' download; else skip."""
    if SHARED_WEIGHTS.is_file():
        return str(SHARED_WEIGHTS)
    if weights_host_reachable(APPLICATIONS[MODEL].weights_url, timeout=5):
        return "imagenet"
    pytest.skip(f"no real {MODEL} weights: {SHARED_WEIGHTS} is absent and Keras' download host "
                f"({APPLICATIONS[MODEL].weights_host}) is unreachable")


def run_script(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(auto_cmd run, the downloaded .keras path) with MobileNetV2 served under its own name."""
    weights = weights_source()
    root = tmp_path_factory.mktemp("real_weights")
    keras_file, base_path = root / f"{MODEL}.keras", root / MODEL
    run_script("scripts/download_model.py", "--model", MODEL, "--weights", weights, "--output", str(keras_file))
    run_script("scripts/export_saved_model.py", "--model", str(keras_file), "--base-path", str(base_path))
    run = AutoCmd(base_path, None, ["--no-input", "--model-name", MODEL], stdin=subprocess.DEVNULL)
    try:
        run.wait_for_line("running until SIGTERM", READY_TIMEOUT)
        yield run, keras_file
    finally:
        run.kill()


@pytest.fixture(scope="module")
def keras_scores(served) -> dict[str, np.ndarray]:
    """In-process Keras on the same .keras file: photo name -> its 1000 probabilities."""
    import keras

    _, keras_file = served
    model = keras.models.load_model(keras_file, compile=False)
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input
    scores = {}
    for name in PHOTOS:
        image = keras.utils.img_to_array(keras.utils.load_img(REPO_ROOT / "test_images" / name,
                                                              target_size=APPLICATIONS[MODEL].input_size))
        scores[name] = model.predict(preprocess_input(image[None]), verbose=0)[0]
    return scores


@pytest.mark.parametrize("photo", PHOTOS)
def test_real_photo_gets_its_label_and_keras_scores_through_the_gateway(served, keras_scores, photo):
    run, _ = served
    data = (REPO_ROOT / "test_images" / photo).read_bytes()
    response = requests.post(f"http://127.0.0.1:{run.gw_port}/v1/models/{MODEL.lower()}/predict",
                             params={"top_k": TOP_K}, files={"file": (photo, data)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL.lower() and "warning" not in body  # real weights: no untrained warning
    answer = body["predictions"]
    assert answer[0]["label"] in PHOTOS[photo], answer
    # the gateway names each class as Keras' ImageNet index does, with Keras' own score for it
    labels = imagenet_labels()
    index = {wnid: i for i, (wnid, _) in enumerate(labels)}
    expected = keras_scores[photo]
    assert [p["label"] for p in answer] == [labels[index[p["wnid"]]][1] for p in answer]
    np.testing.assert_allclose([p["score"] for p in answer], [expected[index[p["wnid"]]] for p in answer],
                               rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose([p["score"] for p in answer], -np.sort(-expected)[:TOP_K], rtol=0, atol=TOLERANCE)
