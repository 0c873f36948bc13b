"""model_server/servable.py: one loaded version of a tiny real export (load, signatures, metadata, run).

The expected numbers come from Keras (the exporter's model rebuilt with the same seed), never from
the servable itself; the expected messages are TF Serving's.
"""

from __future__ import annotations

import numpy as np
import pytest

from model_server import errors
from model_server.servable import Signature, load_servable, read_meta_graph, translate_tf_errors
from serving_contract.export import read_export_info
from tests.model_server.conftest import TINY_INPUT
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
    ({"image": np.zeros((1, 8, 8, 3), np.float32)}, errors.InvalidArgument,
     "Input 'image' of signature 'serving_default' must have shape [-1,32,32,3] (-1: any size), got [1,8,8,3]"),
    ({"picture": np.zeros((1, 32, 32, 3), np.float32)}, errors.InvalidArgument,
     "Invalid input for signature 'serving_default'"),
    ({}, errors.InvalidArgument, "Invalid input for signature 'serving_default'"),
])
def test_run_errors_are_invalid_argument(tiny, inputs, error, fragment):
    with pytest.raises(error) as caught:
        tiny.run("serving_default", inputs)
    assert fragment in caught.value.message


def test_bytes_of_the_wrong_length_are_tensorflows_invalid_argument(tiny):
    with pytest.raises(errors.InvalidArgument):
        tiny.run("serving_bytes", {"pixels_bytes": np.array([b"\x00" * 12], dtype=object)})


def test_warm_up_survives_signatures_whose_synthetic_input_is_invalid(tiny):
    tiny.warm_up()  # serving_bytes cannot decode b"": logged and skipped, never raised


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
