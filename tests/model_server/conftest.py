"""Models the model-server tests export themselves, and a server config helper.

* ``tiny``: our exporter's Keras classifier (signatures ``serving_default`` and ``serving_bytes``),
  versions 1 and 2 with different weights.
* ``half_plus_two``: a TF1 SavedModel like TF Serving's testdata, with ``classify_x_to_y`` and
  ``regress_x_to_y`` signatures taking serialized tf.Example (method names classify/regress).
* ``slow``: sleeps for the number of seconds it is given (deadline and graceful-shutdown tests).
* ``spec_example``: the model of the Open Inference Protocol's worked examples (v2 tests).
* ``v2_repository``: some of them loaded in this process, for the v2 API tests without a socket.
* ``export_simple_save``: a TF1 raw graph written with ``tf.compat.v1.saved_model.simple_save``, as
  the tutorial's export script does (``SIMPLE_SAVE_WEIGHTS`` / ``SIMPLE_SAVE_BIAS``).

TF Serving's own test models (``TFS_TESTDATA``) are read in place where they exist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_server.repository import STATE_AVAILABLE, STATE_LOADING, ModelRepository
from model_server.servable import load_servable
from serving_contract.export import read_export_info, write_export_info
from serving_contract.labels import labels_to_info
from tests.support.processes import REPO_ROOT
from tests.support.tiny_models import export_tiny_classifier

TINY_INPUT = (32, 32)
# TF Serving's testdata SavedModels (half_plus_two, half_plus_three, ...), shared beside the project.
TFS_TESTDATA = REPO_ROOT.parent / "shared" / "tfs_testdata"
SIMPLE_SAVE_WEIGHTS = ((0.5, -1.0), (2.0, 0.25), (-0.75, 1.5))
SIMPLE_SAVE_BIAS = (0.1, -0.2)


def tfs_model(name: str) -> Path:
    """The base path of one of TF Serving's test models; skips the test (with why) where it is absent."""
    path = TFS_TESTDATA / name
    if not path.is_dir():
        pytest.skip(f"TF Serving's test model {name} is not at {path}")
    return path


def export_simple_save(export_dir: Path) -> Path:
    """``scores = softmax(x @ W + b)`` for x float32 ``[batch, 3]``, saved with TF1's ``simple_save``."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        weights = v1.get_variable("weights", initializer=tf.constant(SIMPLE_SAVE_WEIGHTS, tf.float32))
        bias = v1.get_variable("bias", initializer=tf.constant(SIMPLE_SAVE_BIAS, tf.float32))
        scores = tf.nn.softmax(tf.matmul(x, weights) + bias, name="scores")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            v1.saved_model.simple_save(session, str(export_dir), inputs={"x": x}, outputs={"scores": scores})
    return export_dir


def export_half_plus_two(export_dir: Path) -> Path:
    """y = 0.5 * x + 2 with predict, classify and regress signatures (TF1 graph export)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    build = v1.saved_model.signature_def_utils.build_signature_def
    info = v1.saved_model.utils.build_tensor_info
    names = v1.saved_model.signature_constants
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x_feature = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        a, b = tf.Variable(0.5, name="a"), tf.Variable(2.0, name="b")
        y_examples = tf.add(a * x_feature, b, name="y_examples")
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(a * x, b, name="y")
        classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(y_examples)[0], 1])
        scores = tf.concat([1 - tf.sigmoid(y_examples), tf.sigmoid(y_examples)], axis=1)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": build({"x": info(x)}, {"y": info(y)}, names.PREDICT_METHOD_NAME),
                "classify_x_to_y": build({names.CLASSIFY_INPUTS: info(serialized)},
                                         {names.CLASSIFY_OUTPUT_CLASSES: info(classes),
                                          names.CLASSIFY_OUTPUT_SCORES: info(scores)},
                                         names.CLASSIFY_METHOD_NAME),
                "regress_x_to_y": build({names.REGRESS_INPUTS: info(serialized)},
                                        {names.REGRESS_OUTPUTS: info(y_examples)}, names.REGRESS_METHOD_NAME),
            })
            builder.save()
    return export_dir


def export_slow_model(export_dir: Path) -> Path:
    """A model whose call takes max(seconds) seconds (a busy loop on tf.timestamp)."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="seconds")])
        def serve(self, seconds):
            deadline = tf.timestamp() + tf.cast(tf.reduce_max(seconds), tf.float64)
            spins = tf.while_loop(lambda i: tf.timestamp() < deadline, lambda i: i + 1, [tf.constant(0, tf.int64)])
            return {"seconds": seconds + 0.0 * tf.cast(spins, tf.float32)}

    module = Slow()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir


SPEC_CLASS_SCORES = (1.1, 3.3, 0.5, 2.4)


def export_spec_example(export_dir: Path) -> Path:
    """The model inference_rest.md and Triton's extension documents use in their examples.

    ``serving_default``: ``input0`` UINT32 [2, 2] and ``input1`` BOOL [3] -> ``output0`` FP32 [3, 2],
    ``output0[i] = [input1[i] * sum(input0), input1[i] * sum(input0) + 0.5]``.
    ``classify``: ``input0`` UINT32 [2, 2] -> ``output0`` FP32 [4] = SPEC_CLASS_SCORES, the scores of
    the classification example ([1.1, 3.3, 0.5, 2.4]).
    """
    import tensorflow as tf

    class SpecExample(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([2, 2], tf.uint32, name="input0"),
                                      tf.TensorSpec([3], tf.bool, name="input1")])
        def serve(self, input0, input1):
            total = tf.cast(tf.reduce_sum(tf.cast(input0, tf.int64)), tf.float32)
            column = tf.cast(input1, tf.float32) * total
            return {"output0": tf.stack([column, column + 0.5], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([2, 2], tf.uint32, name="input0")])
        def classify(self, input0):
            total = tf.cast(tf.reduce_sum(tf.cast(input0, tf.int64)), tf.float32)
            # Exactly the document's scores whatever the input (the input only has to flow through).
            return {"output0": tf.constant(SPEC_CLASS_SCORES, tf.float32) + 0.0 * total}

    module = SpecExample()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve,
                                                            "classify": module.classify})
    return export_dir


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory) -> dict[str, Path]:
    """Base paths of the exported test models: tiny (v1, v2), half_plus_two (v1), slow (v1)."""
    root = tmp_path_factory.mktemp("models")
    export_tiny_classifier(root / "tiny", 1, input_size=TINY_INPUT, seed=0)
    export_tiny_classifier(root / "tiny", 2, input_size=TINY_INPUT, seed=1)
    export_half_plus_two(root / "half_plus_two" / "1")
    export_slow_model(root / "slow" / "1")
    return {"tiny": root / "tiny", "half_plus_two": root / "half_plus_two", "slow": root / "slow"}


TINY_LABELS = [f"class-{i}" for i in range(10)]


@pytest.fixture(scope="session")
def v2_repository(model_paths, spec_example_path, tmp_path_factory):
    """Loaded in this process: spec_example, tiny v1 and v2, labelled (tiny v1 with labels), loading (LOADING)."""
    repo = ModelRepository()
    labelled = tmp_path_factory.mktemp("labelled") / "1"
    shutil.copytree(model_paths["tiny"] / "1", labelled)
    write_export_info(labelled, {**read_export_info(labelled),
                                 "labels": labels_to_info([(f"c{i}", label) for i, label in enumerate(TINY_LABELS)])})
    for name, version, path in [("spec_example", 1, spec_example_path / "1"), ("tiny", 1, model_paths["tiny"] / "1"),
                                ("tiny", 2, model_paths["tiny"] / "2"), ("labelled", 1, labelled)]:
        repo.set_state(name, version, STATE_AVAILABLE, load_servable(name, version, path, warm_up=False))
    repo.set_state("loading", 1, STATE_LOADING)
    return repo


@pytest.fixture(scope="session")
def spec_example_path(tmp_path_factory) -> Path:
    """Base path of the ``spec_example`` model (version 1)."""
    base = tmp_path_factory.mktemp("spec_models") / "spec_example"
    export_spec_example(base / "1")
    return base


def model_config_text(models: dict[str, Path], extra: dict[str, str] | None = None) -> str:
    """A ModelServerConfig text proto serving ``models``; ``extra`` adds fields per model name."""
    entries = []
    for name, base_path in models.items():
        more = (extra or {}).get(name, "")
        entries.append(f'  config {{\n    name: "{name}"\n    base_path: "{base_path}"\n'
                       f'    model_platform: "tensorflow"\n    {more}\n  }}')
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"
