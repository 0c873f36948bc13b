"""InceptionV3 end to end: export -> ``python -m model_server`` -> scripts/serving_sample_request.py.

One model build, one export and one model server for the whole module. The weights are untrained
(no internet here), so many scores are nearly equal: rows are checked by their scores against an
in-process ``model.predict``, not by expecting particular labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flask_server.labels import load_labels
from flask_server.preprocess import load_and_preprocess
from scripts.export_saved_model import export_keras_model
from serving_contract.export import DEFAULT_MODEL_NAME, UNTRAINED_WEIGHTS
from tests.support.processes import free_port

pytestmark = [pytest.mark.inception, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "serving_sample_request.py"
IMAGE = REPO / "test_images" / "chelsea.jpg"
MODEL_NAME = DEFAULT_MODEL_NAME  # the sample script's default
SEED = 0
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def served_inception(tmp_path_factory, model_server_factory):
    """(Keras model, running model server) with the model exported as version 1."""
    if not (REPO / "model_server" / "__main__.py").exists():
        pytest.skip("model_server/__main__.py does not exist yet")
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.applications.InceptionV3(weights=None)
    base = tmp_path_factory.mktemp("inception") / MODEL_NAME
    export_keras_model(model, base, info={"model": model.name, "weights": UNTRAINED_WEIGHTS, "preprocessing": "tf"},
                       log=lambda _msg: None)
    grpc_port = free_port()
    with model_server_factory(model_name=MODEL_NAME, model_base_path=base, timeout=180,
                              extra_args=[f"--port={grpc_port}"]) as server:
        server.extra["grpc_address"] = f"127.0.0.1:{grpc_port}"
        yield model, server


@pytest.fixture(scope="module")
def expected_probabilities(served_inception) -> np.ndarray:
    model, _ = served_inception
    pixels = load_and_preprocess(IMAGE.read_bytes(), (299, 299), "tf")
    return model.predict(pixels[None], verbose=0)[0]


def run_sample_request(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("signature", ["serving_uint8", "serving_bytes", "serving_default"])
def test_sample_request_matches_in_process_predict(served_inception, expected_probabilities, signature):
    _, server = served_inception
    result = run_sample_request("-i", str(IMAGE), "--url", server.url, "--signature", signature)
    assert result.returncode == 0, result.stderr + server.log()[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert "untrained" in result.stderr

    labels = load_labels("imagenet")
    index_of = {wnid: i for i, (wnid, _) in enumerate(labels)}
    probs = expected_probabilities
    assert len(rows) == 5 and len({wnid for wnid, _, _ in rows}) == 5
    scores = [score for _, _, score in rows]
    assert scores == sorted(scores, reverse=True)
    for wnid, label, score in rows:
        assert labels[index_of[wnid]][1] == label
        assert score == pytest.approx(float(probs[index_of[wnid]]), abs=TOLERANCE)
    # They are the five largest: nothing left out scores above the lowest printed one.
    left_out = np.delete(probs, [index_of[wnid] for wnid, _, _ in rows])
    assert left_out.max() <= min(scores) + TOLERANCE


@pytest.mark.parametrize("signature", ["serving_uint8", "serving_default"])
def test_sample_request_over_grpc_prints_the_rest_top_5(served_inception, signature):
    _, server = served_inception
    by_rest = run_sample_request("-i", str(IMAGE), "--url", server.url, "--signature", signature)
    by_grpc = run_sample_request("-i", str(IMAGE), "--grpc", server.extra["grpc_address"], "--signature", signature)
    assert by_grpc.returncode == 0, by_grpc.stderr + server.log()[-3000:]
    rest_rows, grpc_rows = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (by_rest, by_grpc))
    assert [row[:2] for row in grpc_rows] == [row[:2] for row in rest_rows]
    assert [row[2] for row in grpc_rows] == pytest.approx([row[2] for row in rest_rows], abs=1e-6)


def test_sample_request_reports_model_server_errors(served_inception):
    _, server = served_inception
    result = run_sample_request("-i", str(IMAGE), "--url", server.url, "--model", "NoSuchModel")
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "NoSuchModel" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
