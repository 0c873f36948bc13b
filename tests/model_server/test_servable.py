"""model_server.servable in-process: TF1 and TF2 SavedModels run in a Session, TensorFlow decides shapes.

Expected values are computed here independently (numpy, or the Keras model itself), never read
back from the server. Models whose kernels could abort on a wrong rank (oneDNN convolutions, on in
this test process) are only given well-formed inputs here; the REST tests cover the rest.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.models import TINY_CLASSES, build_tiny_classifier, export_untrained
from model_server.errors import NotFound, Unavailable
from model_server.servable import INIT_OP_SIGNATURE_KEY, load_servable
from serving_contract.export import INPUT_IMAGE, OUTPUT_PROBABILITIES, SERVING_DEFAULT
from tests.model_server.conftest import (SIMPLE_SAVE_BIAS, SIMPLE_SAVE_WEIGHTS, TINY_INPUT, export_half_plus_two,
                                         export_simple_save, tfs_model)
from tests.support.serving_errors import error_message

pytestmark = pytest.mark.timeout(120)


def serialized(*xs: float) -> np.ndarray:
    import tensorflow as tf

    return np.array([tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString() for x in xs], object)


@pytest.fixture(scope="module")
def half_plus_two():
    servable = load_servable("half_plus_two", 123, tfs_model("half_plus_two") / "00000123", warm_up=False)
    yield servable
    servable.close()


def test_simple_save_export_runs_as_numpy_computes_it(tmp_path):
    servable = load_servable("tf1", 1, export_simple_save(tmp_path / "1"), warm_up=False)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], np.float32)
    logits = x @ np.array(SIMPLE_SAVE_WEIGHTS, np.float32) + np.array(SIMPLE_SAVE_BIAS, np.float32)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(servable.run(SERVING_DEFAULT, {"x": x})["scores"], expected, rtol=1e-6)
    servable.close()


# -- no shape check against the SignatureDef: TensorFlow decides (half_plus_two declares x [-1,1]) --

@pytest.mark.parametrize("x, expected", [
    (np.array([1.0, 2.0, 5.0], np.float32), [2.5, 3.0, 4.5]),            # flat, as in TF Serving's README
    (np.array([[1.0], [2.0]], np.float32), [[2.5], [3.0]]),               # the declared [-1,1]
    (np.array(4.0, np.float32), 4.0),                                     # a scalar
    (np.zeros((0,), np.float32), []),                                     # empty
])
def test_feeds_of_any_shape_tensorflow_accepts(half_plus_two, x, expected):
    y = half_plus_two.run(SERVING_DEFAULT, {"x": x})["y"]
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, np.array(expected, np.float32))


def test_tensorflow_errors_keep_their_code_and_message(half_plus_two):
    message = error_message(half_plus_two.run, SERVING_DEFAULT, {"x": np.array([1.0], np.float64)})
    assert "Type mismatch" in message and "double" in message and "float" in message


def test_unknown_input_alias_and_signature(half_plus_two):
    assert error_message(half_plus_two.run, SERVING_DEFAULT, {"z": np.ones(1, np.float32)}) == (
        "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.")
    assert "not found in signature def" in error_message(half_plus_two.run, "nope", {})


def test_tf1_scalar_string_placeholder_takes_a_batch_of_examples():
    servable = load_servable("half_plus_three", 123, tfs_model("half_plus_three") / "00000123", warm_up=False)
    signature = servable.example_signature("tensorflow/serving/regress", "regress")
    outputs = servable.run(signature.name, {"inputs": serialized(1.0, 2.0)})
    np.testing.assert_array_equal(outputs["outputs"].ravel(), [3.5, 4.0])  # 0.5 x + 3
    np.testing.assert_array_equal(servable.run(SERVING_DEFAULT, {"x": np.array([1.0, 2.0], np.float32)})["y"],
                                  [3.5, 4.0])
    servable.close()


def test_tf1_builder_export_classifies_and_regresses(tmp_path):
    servable = load_servable("hp2", 1, export_half_plus_two(tmp_path / "1"), warm_up=False)
    regress = servable.example_signature("regress_x_to_y", "regress")
    np.testing.assert_allclose(servable.run(regress.name, {"inputs": serialized(2.0, 4.0)})["outputs"].ravel(),
                               [3.0, 4.0])
    classify = servable.example_signature("classify_x_to_y", "classify")
    outputs = servable.run(classify.name, {"inputs": serialized(0.0)})
    assert outputs["classes"].tolist() == [[b"low", b"high"]]
    sigmoid = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(outputs["scores"], [[1 - sigmoid, sigmoid]], rtol=1e-6)
    servable.close()


def test_tf2_keras_export_matches_keras_in_a_session(tmp_path):
    model = build_tiny_classifier(TINY_INPUT, TINY_CLASSES, 3)
    servable = load_servable("tiny", 1, export_untrained(model, tmp_path, 1), warm_up=False)
    images = np.random.default_rng(1).random((3, *TINY_INPUT, 3), dtype=np.float32)
    served = servable.run(SERVING_DEFAULT, {INPUT_IMAGE: images})[OUTPUT_PROBABILITIES]
    np.testing.assert_allclose(served, model(images, training=False).numpy(), atol=1e-6)
    servable.close()


def test_images_of_a_lower_rank_are_refused_before_onednn_sees_them(tmp_path):
    # test that the one shape check keeps this process alive: oneDNN (on here, TF's default) aborts
    # on a rank-3 tensor into a convolution; other shapes stay TensorFlow's to judge
    model = build_tiny_classifier(TINY_INPUT, TINY_CLASSES, 4)
    servable = load_servable("tiny", 1, export_untrained(model, tmp_path, 1), warm_up=False)
    assert error_message(servable.run, SERVING_DEFAULT, {INPUT_IMAGE: np.zeros((1, 32, 32), np.float32)}) == (
        "input 'image' must be 4-dimensional like the signature's [-1,32,32,3], got [1,32,32]")
    assert "filter depth" in error_message(servable.run, SERVING_DEFAULT,
                                           {INPUT_IMAGE: np.zeros((1, 32, 32, 2), np.float32)})
    bigger = servable.run(SERVING_DEFAULT, {INPUT_IMAGE: np.zeros((1, 48, 48, 3), np.float32)})
    assert bigger[OUTPUT_PROBABILITIES].shape[0] == 1  # undeclared size, which this graph runs
    servable.close()


def test_tf2_init_op_is_metadata_not_a_signature():
    servable = load_servable("tf2", 123, tfs_model("half_plus_two_tf2") / "00000123", warm_up=False)
    assert INIT_OP_SIGNATURE_KEY not in servable.signatures
    assert INIT_OP_SIGNATURE_KEY in servable.metadata()["metadata"]["signature_def"]["signature_def"]
    np.testing.assert_array_equal(servable.run(SERVING_DEFAULT, {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"],
                                  [2.5, 3.0, 4.5])
    servable.close()


def test_metadata_lists_every_signature_def(half_plus_two):
    signature_defs = half_plus_two.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(signature_defs) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                                   "regress_x2_to_y3"}
    assert signature_defs["serving_default"]["inputs"]["x"]["name"] == "x:0"


def test_closed_servable_is_unavailable(tmp_path):
    servable = load_servable("tf1", 1, export_simple_save(tmp_path / "1"), warm_up=False)
    servable.close()
    error_message(servable.run, SERVING_DEFAULT, {"x": np.ones((1, 3), np.float32)}, cls=Unavailable)


def test_missing_saved_model_and_tags(tmp_path):
    assert "Could not find SavedModel .pb or .pbtxt" in error_message(
        load_servable, "m", 1, tmp_path, cls=NotFound)
    path = export_simple_save(tmp_path / "1")
    with pytest.raises(NotFound, match="Could not find meta graph def matching supplied tags: { gpu serve }"):
        load_servable("m", 1, path, ("serve", "gpu"), warm_up=False)

