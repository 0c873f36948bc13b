"""model_server/servable.py: one loaded version in a Session (load, signatures, metadata, run).

Tiny real exports (TF2 from our exporter, TF1 from the builder and ``simple_save``) and TF Serving's
own test models where present. The expected numbers come from Keras (the exporter's model rebuilt
with the same seed) or numpy, never from the servable itself; the expected messages are TF
Serving's or TensorFlow's. Models whose kernels could abort on a wrong rank (oneDNN convolutions,
on in this test process) only get the shapes the servable's one check lets through.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.models import TINY_CLASSES, export_untrained
from model_server import errors
from model_server.errors import Unavailable
from model_server.servable import (INIT_OP_SIGNATURE_KEY, Signature, load_servable, read_meta_graph,
                                   translate_tf_errors)
from serving_contract.export import INPUT_IMAGE, OUTPUT_PROBABILITIES, SERVING_DEFAULT, read_export_info
from tests.model_server.conftest import (SIMPLE_SAVE_BIAS, SIMPLE_SAVE_WEIGHTS, TINY_INPUT, export_half_plus_two,
                                         export_simple_save, tfs_model)
from tests.support.serving_errors import error_message
from tests.support.tiny_models import build_tiny_classifier

CLASSES = 10


@pytest.fixture(scope="module")
def tiny(model_paths):
    """Version 1 of the tiny classifier (seed 0), loaded with warm-up."""
    return load_servable("tiny", 1, model_paths["tiny"] / "1")


@pytest.fixture(scope="module")
def half_plus_two(model_paths):
    return load_servable("half_plus_two", 1, model_paths["half_plus_two"] / "1", warm_up=False)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).random((3, *TINY_INPUT, 3), dtype=np.float32)


# -- load and signatures -------------------------------------------------------------------------

def test_signatures_come_from_the_signature_defs(tiny):
    assert set(tiny.signatures) == {"serving_default", "serving_bytes", "serving_uint8", "serving_topk"}
    default = tiny.signatures["serving_default"]
    assert isinstance(default, Signature) and default.method_name == "tensorflow/serving/predict"
    assert {key: (spec.dtype, spec.shape) for key, spec in default.inputs.items()} == {
        "image": ("DT_FLOAT", (None, *TINY_INPUT, 3))}
    assert {key: (spec.dtype, spec.shape) for key, spec in default.outputs.items()} == {
        "probabilities": ("DT_FLOAT", (None, CLASSES))}
    assert tiny.signatures["serving_bytes"].inputs["pixels_bytes"].dtype == "DT_STRING"
    topk = tiny.signatures["serving_topk"]
    assert {key: (spec.dtype, spec.shape) for key, spec in topk.inputs.items()} == {
        "pixels_bytes": ("DT_STRING", (None,)), "k": ("DT_INT32", (None,))}
    assert {key: (spec.dtype, spec.shape) for key, spec in topk.outputs.items()} == {
        "scores": ("DT_FLOAT", (None, None)), "class_index": ("DT_INT32", (None, None)),
        "class_id": ("DT_STRING", (None, None)), "class_label": ("DT_STRING", (None, None))}


def test_tf1_export_keeps_its_method_names(half_plus_two):
    methods = {key: signature.method_name for key, signature in half_plus_two.signatures.items()}
    assert methods == {"serving_default": "tensorflow/serving/predict",
                       "classify_x_to_y": "tensorflow/serving/classify",
                       "regress_x_to_y": "tensorflow/serving/regress"}


def test_metadata_names_the_version_and_carries_the_export_info(tiny, model_paths):
    metadata = tiny.metadata()
    assert metadata["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signature_defs = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signature_defs) >= set(tiny.signatures)
    image = signature_defs["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT" and [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
    written = read_export_info(model_paths["tiny"] / "1")
    assert metadata["metadata"]["export_info"] == written == tiny.export_info


# -- run -----------------------------------------------------------------------------------------

def test_run_equals_the_keras_model_it_was_exported_from(tiny, images):
    keras_model = build_tiny_classifier(TINY_INPUT, CLASSES, seed=0)  # what the fixture exported as version 1
    outputs = tiny.run("serving_default", {"image": images})
    assert set(outputs) == {"probabilities"}
    np.testing.assert_allclose(outputs["probabilities"], keras_model.predict(images, verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_bytes_signature_equals_the_float_one(tiny, images):
    rows = np.array([image.astype("<f4").tobytes() for image in images], dtype=object)
    np.testing.assert_allclose(tiny.run("serving_bytes", {"pixels_bytes": rows})["probabilities"],
                               tiny.run("serving_default", {"image": images})["probabilities"], rtol=1e-6)


@pytest.mark.parametrize("inputs, error, fragment", [
    ({"image": np.zeros((1, 32, 32), np.float32)}, errors.InvalidArgument,
     "input 'image' must be 4-dimensional like the signature's [-1,32,32,3], got [1,32,32]"),
    ({"image": np.zeros((1, 32, 32, 2), np.float32)}, errors.InvalidArgument,
     "input depth must be evenly divisible by filter depth: 2 vs 3"),
    ({"image": np.zeros((1, 32, 32, 3), np.float64)}, errors.InvalidArgument, "Type mismatch"),
    ({"picture": np.zeros((1, 32, 32, 3), np.float32)}, errors.InvalidArgument,
     "input tensor alias not found in signature: picture. Inputs expected to be in the set {image}."),
    ({}, errors.InvalidArgument, "You must feed a value for placeholder tensor"),
])
def test_run_errors_are_invalid_argument(tiny, inputs, error, fragment):
    with pytest.raises(error) as caught:
        tiny.run("serving_default", inputs)
    assert fragment in caught.value.message


def test_bytes_of_the_wrong_length_are_tensorflows_invalid_argument(tiny):
    with pytest.raises(errors.InvalidArgument):
        tiny.run("serving_bytes", {"pixels_bytes": np.array([b"\x00" * 12], dtype=object)})


def test_a_size_the_signature_does_not_declare_is_tensorflows_to_judge(tiny):
    bigger = tiny.run("serving_default", {"image": np.zeros((2, 48, 48, 3), np.float32)})
    assert bigger["probabilities"].shape == (2, CLASSES)  # this graph pools to a fixed size


# -- signature lookup ----------------------------------------------------------------------------

def test_predict_signature_default_and_unknown(tiny):
    assert tiny.predict_signature(None).name == "serving_default"
    assert tiny.predict_signature("serving_bytes").name == "serving_bytes"
    with pytest.raises(errors.InvalidArgument, match='Serving signature name: "nope" not found in signature def'):
        tiny.predict_signature("nope")


def test_example_signatures_accept_their_own_method(half_plus_two):
    assert half_plus_two.example_signature("classify_x_to_y", "classify").name == "classify_x_to_y"
    assert half_plus_two.example_signature("regress_x_to_y", "regress").name == "regress_x_to_y"


@pytest.mark.parametrize("name, verb, fragment", [
    ("nope", "classify", "No signature was found with the name: nope"),
    (None, "classify", "No classification inputs found in SignatureDef"),
    (None, "regress", "No regression inputs found in SignatureDef"),
    ("regress_x_to_y", "classify", 'Expected classification signature outputs to contain at least one of "classes"'),
    ("classify_x_to_y", "regress", "Expected one output Tensor."),
])
def test_example_signature_errors_are_tf_servings(half_plus_two, name, verb, fragment):
    with pytest.raises(errors.InvalidArgument) as caught:
        half_plus_two.example_signature(name, verb)
    assert fragment in caught.value.message


# -- reading an export ---------------------------------------------------------------------------

def test_missing_saved_model_is_not_found(tmp_path):
    with pytest.raises(errors.NotFound, match="Could not find SavedModel .pb or .pbtxt"):
        read_meta_graph(tmp_path, {"serve"})


def test_garbage_saved_model_is_data_loss(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff not a proto")
    with pytest.raises(errors.DataLoss, match="as binary proto"):
        read_meta_graph(tmp_path, {"serve"})


def test_wrong_tags_name_the_available_ones(model_paths):
    with pytest.raises(errors.NotFound) as caught:
        load_servable("tiny", 1, model_paths["tiny"] / "1", tags=("serve", "gpu"), warm_up=False)
    assert "Could not find meta graph def matching supplied tags: { gpu serve }" in caught.value.message
    assert "Available tag-sets: [['serve']]" in caught.value.message


def test_tensorflow_errors_keep_their_canonical_code():
    import tensorflow as tf

    with pytest.raises(errors.ResourceExhausted, match="out of memory"), translate_tf_errors():
        raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
    with pytest.raises(errors.InvalidArgument, match="bad shape"), translate_tf_errors():
        raise tf.errors.InvalidArgumentError(None, None, "bad shape")
    with pytest.raises(KeyError), translate_tf_errors():  # not TensorFlow's: a bug, left alone
        raise KeyError("x")


# -- TensorFlow decides the shapes; TF1 and TF2 exports alike ------------------------------------

def serialized(*xs: float) -> np.ndarray:
    import tensorflow as tf

    return np.array([tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString() for x in xs], object)


@pytest.fixture(scope="module")
def tfs_half_plus_two():
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
def test_feeds_of_any_shape_tensorflow_accepts(tfs_half_plus_two, x, expected):
    y = tfs_half_plus_two.run(SERVING_DEFAULT, {"x": x})["y"]
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, np.array(expected, np.float32))


def test_tensorflow_errors_keep_their_code_and_message(tfs_half_plus_two):
    message = error_message(tfs_half_plus_two.run, SERVING_DEFAULT, {"x": np.array([1.0], np.float64)})
    assert "Type mismatch" in message and "double" in message and "float" in message


def test_unknown_input_alias_and_signature(tfs_half_plus_two):
    assert error_message(tfs_half_plus_two.run, SERVING_DEFAULT, {"z": np.ones(1, np.float32)}) == (
        "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.")
    assert "not found in signature def" in error_message(tfs_half_plus_two.run, "nope", {})


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


def test_tf2_init_op_is_metadata_not_a_signature():
    servable = load_servable("tf2", 123, tfs_model("half_plus_two_tf2") / "00000123", warm_up=False)
    assert INIT_OP_SIGNATURE_KEY not in servable.signatures
    assert INIT_OP_SIGNATURE_KEY in servable.metadata()["metadata"]["signature_def"]["signature_def"]
    np.testing.assert_array_equal(servable.run(SERVING_DEFAULT, {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"],
                                  [2.5, 3.0, 4.5])
    servable.close()


def test_metadata_lists_every_signature_def(tfs_half_plus_two):
    signature_defs = tfs_half_plus_two.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(signature_defs) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                                   "regress_x2_to_y3"}
    assert signature_defs["serving_default"]["inputs"]["x"]["name"] == "x:0"


def test_closed_servable_is_unavailable(tmp_path):
    servable = load_servable("tf1", 1, export_simple_save(tmp_path / "1"), warm_up=False)
    servable.close()
    error_message(servable.run, SERVING_DEFAULT, {"x": np.ones((1, 3), np.float32)}, cls=Unavailable)
