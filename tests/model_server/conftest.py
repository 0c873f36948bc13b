"""Models the model-server tests export themselves (never /work/shared), and a server config helper.

* ``tiny``: our exporter's Keras classifier (signatures ``serving_default`` and ``serving_bytes``),
  versions 1 and 2 with different weights.
* ``half_plus_two``: a TF1 SavedModel like TF Serving's testdata, with ``classify_x_to_y`` and
  ``regress_x_to_y`` signatures taking serialized tf.Example (method names classify/regress).
* ``slow``: sleeps for the number of seconds it is given (deadline and graceful-shutdown tests).
* ``export_simple_save``: a TF1 raw graph written with ``tf.compat.v1.saved_model.simple_save``, as
  the tutorial's export script does (``SIMPLE_SAVE_WEIGHTS`` / ``SIMPLE_SAVE_BIAS``).

TF Serving's own test models (``TFS_TESTDATA``) are read in place where they exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory) -> dict[str, Path]:
    """Base paths of the exported test models: tiny (v1, v2), half_plus_two (v1), slow (v1)."""
    root = tmp_path_factory.mktemp("models")
    export_tiny_classifier(root / "tiny", 1, input_size=TINY_INPUT, seed=0)
    export_tiny_classifier(root / "tiny", 2, input_size=TINY_INPUT, seed=1)
    export_half_plus_two(root / "half_plus_two" / "1")
    export_slow_model(root / "slow" / "1")
    return {"tiny": root / "tiny", "half_plus_two": root / "half_plus_two", "slow": root / "slow"}


def model_config_text(models: dict[str, Path], extra: dict[str, str] | None = None) -> str:
    """A ModelServerConfig text proto serving ``models``; ``extra`` adds fields per model name."""
    entries = []
    for name, base_path in models.items():
        more = (extra or {}).get(name, "")
        entries.append(f'  config {{\n    name: "{name}"\n    base_path: "{base_path}"\n'
                       f'    model_platform: "tensorflow"\n    {more}\n  }}')
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"
