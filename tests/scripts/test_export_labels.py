"""The user's own classifier: export_saved_model.py --labels, the labels an export carries, serving_topk.

A tiny 3-class ``.keras`` model with a labels file: the good case, a wrong count, models that are
not image classifiers; then serving_topk against numpy's top-k over serving_uint8's probabilities,
in process and through our model server's REST API (row format, as the real TF Serving takes it).
"""

from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import requests

from scripts import export_saved_model as export
from scripts.export_saved_model import NotAnImageClassifierError, export_keras_model
from serving_contract.export import (INPUT_K, INPUT_PIXELS_BYTES, LABELS_ASSET_PATH, OUTPUT_CLASS_ID,
                                     OUTPUT_CLASS_INDEX, OUTPUT_CLASS_LABEL, OUTPUT_PROBABILITIES, OUTPUT_SCORES,
                                     SERVING_TOPK, SERVING_UINT8, read_export_info)
from serving_contract.versions import latest_version, list_versions
from tests.support.tiny_models import build_tiny_classifier

QUIET = {"log": lambda _msg: None}
FRUIT = ["apple", "blood orange", "cherry"]


def run_export(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fruit_model(tmp_path_factory) -> Path:
    """A tiny 3-class classifier saved as .keras, without a sidecar (a model of the user's own)."""
    path = tmp_path_factory.mktemp("fruit") / "fruit.keras"
    build_tiny_classifier((32, 32), classes=3, seed=3, name="fruit").save(path)
    return path


def write_labels(path: Path, labels: list[str]) -> Path:
    path.write_text("".join(f"{label}\n" for label in labels))
    return path


def test_custom_model_with_labels_file(fruit_model, tmp_path):
    labels = write_labels(tmp_path / "labels.txt", FRUIT)
    code, out, err = run_export("--model", str(fruit_model), "--labels", str(labels), "--preprocessing", "torch",
                                "--base-path", str(tmp_path / "fruit"))
    assert code == 0, out + err
    version_dir = tmp_path / "fruit" / "1"
    info = read_export_info(version_dir)
    assert info["model"] == "custom" and info["preprocessing"] == "torch" and info["weights"] == "unknown"
    assert info["input_size"] == [32, 32] and info["classes"] == 3
    assert info["labels"] == [{"id": name, "label": name} for name in FRUIT]
    assert (version_dir / LABELS_ASSET_PATH).read_text() == "apple\nblood orange\ncherry\n"

    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    pixels = tf.constant([np.full((32, 32, 3), 200, np.uint8).tobytes()])
    answer = loaded.signatures[SERVING_TOPK](pixels_bytes=pixels, k=tf.constant([3]))
    assert sorted(answer[OUTPUT_CLASS_LABEL].numpy()[0].astype(str).tolist()) == sorted(FRUIT)


@pytest.mark.parametrize("labels, message", [
    (["apple", "cherry"], "3 classes but there are 2 labels"),
    (FRUIT + ["durian"], "3 classes but there are 4 labels"),
])
def test_labels_count_must_match_the_classes(fruit_model, tmp_path, labels, message):
    path = write_labels(tmp_path / "labels.txt", labels)
    code, out, err = run_export("--model", str(fruit_model), "--labels", str(path), "--base-path", str(tmp_path / "b"))
    assert code == 2
    assert err.count("\n") == 1 and message in err and str(fruit_model) in err
    assert list_versions(tmp_path / "b") == []


@pytest.mark.parametrize("contents, message", [(None, "cannot read labels file"), ("\n \n", "contains no labels")])
def test_unreadable_or_empty_labels_file(fruit_model, tmp_path, contents, message):
    path = tmp_path / "labels.txt"
    if contents is not None:
        path.write_text(contents)
    code, _, err = run_export("--model", str(fruit_model), "--labels", str(path), "--base-path", str(tmp_path / "b"))
    assert code == 2 and message in err and err.count("\n") == 1


def not_classifiers():
    import keras

    image = keras.Input((32, 32, 3))
    flat = keras.Input((12,))
    grey = keras.Input((32, 32, 1))
    return {
        "segmenter": (keras.Model(image, keras.layers.Conv2D(3, 1)(image)),
                      "output [batch, classes], got [batch, 32, 32, 3]"),
        "tabular": (keras.Model(flat, keras.layers.Dense(3)(flat)), "[batch, H, W, 3], got [batch, 12]"),
        "greyscale": (keras.Model(grey, keras.layers.Dense(3)(keras.layers.Flatten()(grey))), "got [batch, 32, 32, 1]"),
    }


@pytest.mark.parametrize("kind", ["segmenter", "tabular", "greyscale"])
def test_not_an_image_classifier_is_refused_with_one_line(tmp_path, kind):
    model, message = not_classifiers()[kind]
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    code, out, err = run_export("--model", str(path), "--base-path", str(tmp_path / "b"))
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not an image classifier" in err and message in err
    assert list_versions(tmp_path / "b") == []


def test_labels_that_cannot_be_written_one_a_line_are_refused(tmp_path):
    model = build_tiny_classifier((32, 32), classes=2, seed=0)
    with pytest.raises(NotAnImageClassifierError, match="tab"):
        export_keras_model(model, tmp_path, labels=[("a", "a"), ("b\tc", "b")], **QUIET)
    assert list_versions(tmp_path) == []


def test_default_labels_are_output_indices_or_imagenet(tmp_path):
    notes = []
    small = export_keras_model(build_tiny_classifier((32, 32), classes=4, seed=0), tmp_path / "small", log=notes.append)
    assert read_export_info(small)["labels"] == [{"id": str(i), "label": str(i)} for i in range(4)]
    assert any("no --labels" in note for note in notes)
    wide = export_keras_model(build_tiny_classifier((32, 32), classes=1000, seed=0), tmp_path / "wide", **QUIET)
    labels = read_export_info(wide)["labels"]
    assert len(labels) == 1000 and labels[0] == {"id": "n01440764", "label": "tench"}  # Keras' class 0


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory):
    """A tiny 10-class export with distinct ids and labels: (version dir, labels, loaded SavedModel)."""
    import tensorflow as tf

    labels = [(f"c{i:02d}", f"class {i}") for i in range(10)]
    base = tmp_path_factory.mktemp("ten")
    version_dir = export_keras_model(build_tiny_classifier((32, 32), classes=10, seed=7), base,
                                     info={"preprocessing": "caffe"}, labels=labels, **QUIET)
    return version_dir, labels, tf.saved_model.load(str(version_dir))


def random_pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("ks", [[3, 1, 5, 2], [10, 10, 10, 10], [99, 0, 0, 0], [0, 0, 0, 0], [-4, 2, 1, 1]])
def test_serving_topk_equals_numpy_top_k_of_serving_uint8(ten_classes, ks):
    import tensorflow as tf

    _, labels, loaded = ten_classes
    pixels = tf.constant([image.tobytes() for image in random_pixels(4)])
    probabilities = loaded.signatures[SERVING_UINT8](pixels_bytes=pixels)[OUTPUT_PROBABILITIES].numpy()
    answer = {name: tensor.numpy() for name, tensor in
              loaded.signatures[SERVING_TOPK](pixels_bytes=pixels, k=tf.constant(ks, tf.int32)).items()}

    k = min(max(ks), 10) if max(ks) > 0 else 0
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    assert answer[OUTPUT_CLASS_INDEX].dtype == np.int32 and answer[OUTPUT_SCORES].dtype == np.float32
    assert answer[OUTPUT_CLASS_INDEX].shape == (4, k)
    np.testing.assert_array_equal(answer[OUTPUT_CLASS_INDEX], order)
    np.testing.assert_allclose(answer[OUTPUT_SCORES], np.take_along_axis(probabilities, order, axis=1),
                               rtol=0, atol=1e-7)
    assert answer[OUTPUT_CLASS_ID].astype(str).tolist() == [[labels[i][0] for i in row] for row in order]
    assert answer[OUTPUT_CLASS_LABEL].astype(str).tolist() == [[labels[i][1] for i in row] for row in order]


def test_serving_topk_through_our_model_server_row_format(ten_classes, tmp_path, model_server_factory):
    version_dir, labels, loaded = ten_classes
    import tensorflow as tf

    images = random_pixels(2, seed=1)
    expected = loaded.signatures[SERVING_UINT8](
        pixels_bytes=tf.constant([image.tobytes() for image in images]))[OUTPUT_PROBABILITIES].numpy()
    base = tmp_path / "ten"
    base.mkdir()
    (base / "1").symlink_to(version_dir, target_is_directory=True)
    with model_server_factory(model_name="ten", model_base_path=base) as server:
        instances = [{INPUT_PIXELS_BYTES: {"b64": base64.b64encode(image.tobytes()).decode()}, INPUT_K: 3}
                     for image in images]
        response = requests.post(f"{server.url}/v1/models/ten:predict",
                                 json={"signature_name": SERVING_TOPK, "instances": instances}, timeout=30)
        assert response.status_code == 200, response.text
        metadata = requests.get(f"{server.url}/v1/models/ten/metadata", timeout=30).json()["metadata"]
    predictions = response.json()["predictions"]
    for row, probabilities in zip(predictions, expected):
        order = np.argsort(-probabilities, kind="stable")[:3]
        assert row[OUTPUT_CLASS_INDEX] == order.tolist()
        assert row[OUTPUT_CLASS_ID] == [labels[i][0] for i in order]
        assert row[OUTPUT_CLASS_LABEL] == [labels[i][1] for i in order]
        np.testing.assert_allclose(row[OUTPUT_SCORES], probabilities[order], rtol=1e-6)
    assert metadata["export_info"]["labels"] == [{"id": i, "label": label} for i, label in labels]
    topk = metadata["signature_def"]["signature_def"][SERVING_TOPK]
    assert set(topk["inputs"]) == {INPUT_PIXELS_BYTES, INPUT_K}
    assert set(topk["outputs"]) == {OUTPUT_SCORES, OUTPUT_CLASS_INDEX, OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL}
    assert latest_version(base) == 1
