"""scripts/export_saved_model.py: version numbering, atomic staging, signatures and export_info."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from scripts import export_saved_model as export
from scripts.export_saved_model import ExportError, export_keras_model
from flask_server.preprocess import scale
from serving_contract.export import (CUSTOM_MODEL, EXPORT_INFO_PATH, INPUT_IMAGE, INPUT_PIXELS_BYTES,
                                     OUTPUT_PROBABILITIES, SERVING_BYTES, SERVING_DEFAULT, SERVING_TOPK, SERVING_UINT8,
                                     SIGNATURES, UNTRAINED_WEIGHTS, WARMUP_REQUESTS_PATH)
from serving_contract.preprocessing import MODES
from serving_contract.versions import is_version_name, list_versions
from tests.support.tiny_models import build_tiny_classifier, export_tiny_classifier

QUIET = {"log": lambda _msg: None}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_classifier((32, 32), classes=10, seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny export shared by the read-only checks: (model, version directory)."""
    base = tmp_path_factory.mktemp("exported")
    model = build_tiny_classifier((32, 32), classes=10, seed=1)
    target = export_keras_model(model, base, info={"model": model.name, "weights": UNTRAINED_WEIGHTS,
                                                   "preprocessing": "tf"}, **QUIET)
    return model, target


def test_next_version_skips_folders_that_are_not_versions(tmp_path):
    # test that names int() refuses or that are no versions neither crash the exporter nor get numbers
    for name in ("²", "foo", ".export-4-abc", "0010x"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    (tmp_path / "3").mkdir()  # still being copied: no saved_model.pb, but its number is taken
    assert export_tiny_classifier(tmp_path) == tmp_path.resolve() / "4"
    assert list_versions(tmp_path) == [4]


def test_exports_next_version_then_explicit_version(tmp_path):
    assert export_tiny_classifier(tmp_path) == tmp_path.resolve() / "1"
    assert export_tiny_classifier(tmp_path) == tmp_path.resolve() / "2"
    assert export_tiny_classifier(tmp_path, version=10) == tmp_path.resolve() / "10"
    assert list_versions(tmp_path) == [1, 2, 10]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_version_refused_without_force_and_replaced_with_it(tmp_path, tiny):
    target = export_keras_model(tiny, tmp_path, 1, info={"weights": "first"}, **QUIET)
    with pytest.raises(ExportError, match="already exists.*--force"):
        export_keras_model(tiny, tmp_path, 1, info={"weights": "second"}, **QUIET)
    assert json.loads((target / EXPORT_INFO_PATH).read_text())["weights"] == "first"
    export_keras_model(tiny, tmp_path, 1, force=True, info={"weights": "second"}, **QUIET)
    assert json.loads((target / EXPORT_INFO_PATH).read_text())["weights"] == "second"
    assert list_versions(tmp_path) == [1]


def test_negative_version_and_unfixed_input_refused(tmp_path, tiny):
    import keras

    with pytest.raises(ExportError, match="non-negative"):
        export_keras_model(tiny, tmp_path, -1, **QUIET)
    inputs = keras.Input((None, None, 3))
    flexible = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ExportError, match="fixed"):
        export_keras_model(flexible, tmp_path, **QUIET)


def test_staging_is_hidden_and_removed_on_failure(tmp_path, tiny, monkeypatch):
    import tensorflow as tf

    seen = []

    def failing_save(obj, path, signatures=None):
        seen.append(Path(path))
        (Path(path) / "saved_model.pb").write_bytes(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export_keras_model(tiny, tmp_path, **QUIET)
    [staging] = seen
    assert staging.parent == tmp_path.resolve() and staging.name.startswith(".")
    assert not is_version_name(staging.name)  # a poller never takes it for a version
    assert list(tmp_path.iterdir()) == []


def test_signatures_agree_with_each_other_and_keras(exported):
    import tensorflow as tf

    model, target = exported
    loaded = tf.saved_model.load(str(target))
    assert set(loaded.signatures) == set(SIGNATURES)
    default, raw = loaded.signatures[SERVING_DEFAULT], loaded.signatures[SERVING_BYTES]
    uint8 = loaded.signatures[SERVING_UINT8]
    assert list(default.structured_input_signature[1]) == [INPUT_IMAGE]
    assert default.structured_input_signature[1][INPUT_IMAGE].shape.as_list() == [None, 32, 32, 3]
    for signature in (raw, uint8):
        assert list(signature.structured_input_signature[1]) == [INPUT_PIXELS_BYTES]
        assert signature.structured_input_signature[1][INPUT_PIXELS_BYTES].dtype == tf.string
        assert list(signature.structured_outputs) == [OUTPUT_PROBABILITIES]
    assert list(default.structured_outputs) == [OUTPUT_PROBABILITIES]

    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    images = scale(pixels, "tf")
    from_floats = default(**{INPUT_IMAGE: tf.constant(images)})[OUTPUT_PROBABILITIES].numpy()
    from_bytes = raw(**{INPUT_PIXELS_BYTES: tf.constant([image.astype("<f4").tobytes() for image in images])})
    np.testing.assert_array_equal(from_floats, from_bytes[OUTPUT_PROBABILITIES].numpy())
    from_uint8 = uint8(**{INPUT_PIXELS_BYTES: tf.constant([image.tobytes() for image in pixels])})
    np.testing.assert_allclose(from_uint8[OUTPUT_PROBABILITIES].numpy(), from_floats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_floats, model.predict(images, verbose=0), atol=1e-6)
    assert from_floats.shape == (3, 10)


def test_export_runs_in_a_session_and_carries_a_warmup_request_per_signature(exported):
    # test that tensorflow_model_server's way of loading (a Session over the serve MetaGraph) finds
    # every variable the signatures read (keras-team/keras#20095), and that warm-up covers each one
    from model_server.servable import load_servable, run_warmup
    from model_server.warmup import read_warmup_requests

    model, target = exported
    requests = [request for record in read_warmup_requests(target) for request in record]
    assert [request.signature_name for request in requests] == list(SIGNATURES)
    servable = load_servable("tiny", 1, target)
    assert run_warmup(servable) == len(SIGNATURES)
    images = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    served = servable.run(SERVING_DEFAULT, {INPUT_IMAGE: images})[OUTPUT_PROBABILITIES]
    np.testing.assert_allclose(served, model.predict(images, verbose=0), atol=1e-6)
    servable.close()


@pytest.mark.parametrize("mode", MODES)
def test_uint8_signature_scales_like_keras_and_the_gateway(tmp_path, mode):
    """serving_uint8's in-graph scaling against the gateway's numpy ``scale`` and Keras'
    ``preprocess_input``, through a model that returns its input, so the pixels it sees are compared."""
    import keras
    import tensorflow as tf
    from keras.applications import imagenet_utils

    inputs = keras.Input((5, 7, 3))
    identity = keras.Model(inputs, keras.layers.Flatten()(inputs))
    target = export_keras_model(identity, tmp_path, info={"preprocessing": mode}, **QUIET)
    assert json.loads((target / EXPORT_INFO_PATH).read_text())["preprocessing"] == mode
    pixels = np.random.default_rng(1).integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = (0, 127, 255), (255, 128, 1)
    signature = tf.saved_model.load(str(target)).signatures[SERVING_UINT8]
    seen = signature(**{INPUT_PIXELS_BYTES: tf.constant([p.tobytes() for p in pixels])})[OUTPUT_PROBABILITIES].numpy()
    # TensorFlow's graph may compute x / c as x * (1 / c): last-bit differences, far inside 1e-5.
    np.testing.assert_allclose(seen, scale(pixels, mode).reshape(4, -1), rtol=0, atol=1e-6)
    keras_input = pixels.astype(np.float32)
    if mode != "none":
        keras_input = imagenet_utils.preprocess_input(keras_input, mode=mode)
    np.testing.assert_allclose(seen, keras_input.reshape(4, -1), rtol=0, atol=1e-5)


def test_unknown_preprocessing_mode_refused(tmp_path, tiny):
    with pytest.raises(ExportError, match="preprocessing mode 'lab'"):
        export_keras_model(tiny, tmp_path, info={"preprocessing": "lab"}, **QUIET)
    assert list_versions(tmp_path) == []


def test_export_info(exported):
    model, target = exported
    info = json.loads((target / EXPORT_INFO_PATH).read_text())
    assert info["weights"] == UNTRAINED_WEIGHTS
    assert info["model"] == CUSTOM_MODEL and info["preprocessing"] == "tf"  # "tiny" is no keras.applications name
    assert info["input_size"] == [32, 32] and info["channels"] == 3 and info["classes"] == 10
    assert set(info["signatures"]) == set(SIGNATURES)
    assert time.strptime(info["exported_at"], "%Y-%m-%dT%H:%M:%SZ")


def test_untrained_warning_is_logged(tmp_path, tiny):
    lines = []
    export_keras_model(tiny, tmp_path, info={"weights": UNTRAINED_WEIGHTS}, log=lines.append)
    assert "UNTRAINED" in lines[-1] and "meaningless" in lines[-1]
    lines.clear()
    export_keras_model(tiny, tmp_path, info={"weights": "imagenet"}, log=lines.append)
    assert not any("UNTRAINED" in line for line in lines)


@pytest.mark.e2e
def test_if_needed_exports_when_there_is_no_version_or_the_latest_predates_a_signature(tmp_path, tiny, capsys):
    import subprocess
    import sys

    model_path = tmp_path / "tiny.keras"
    tiny.save(model_path)
    base = tmp_path / "models"
    args = ["--model", str(model_path), "--base-path", str(base), "--if-needed"]
    assert export.main(args) == 0 and list_versions(base) == [1]
    assert "exporting: no version under" in capsys.readouterr().out
    # Up to date: the real command answers without loading Keras or the model.
    done = subprocess.run([sys.executable, str(Path(export.__file__)), *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "version 1 needs no new export" in done.stdout
    assert list_versions(base) == [1]
    # An export from before serving_uint8 existed: the next version is exported beside it.
    info_path = base / "1" / EXPORT_INFO_PATH
    info = json.loads(info_path.read_text())
    del info["signatures"][SERVING_UINT8]
    info_path.write_text(json.dumps(info))
    assert export.main(args) == 0 and list_versions(base) == [1, 2]
    assert "version 1 was exported without serving_uint8 (the gateway calls" in capsys.readouterr().out
    # An export from before serving_topk (labels inside the export) existed is outdated too.
    info_path = base / "2" / EXPORT_INFO_PATH
    info = json.loads(info_path.read_text())
    del info["signatures"][SERVING_TOPK]
    info_path.write_text(json.dumps(info))
    assert export.main(args) == 0 and list_versions(base) == [1, 2, 3]
    assert "version 2 was exported without serving_topk\n" in capsys.readouterr().out
    # An export from before the one a Session can run (it came with the warm-up file): exported again.
    (base / "3" / WARMUP_REQUESTS_PATH).unlink()
    assert export.main(args) == 0 and list_versions(base) == [1, 2, 3, 4]
    assert "version 3 was exported by an older exporter" in capsys.readouterr().out
    # A SavedModel without our export_info is someone else's: it is not replaced.
    (base / "4" / EXPORT_INFO_PATH).unlink()
    (base / "4" / WARMUP_REQUESTS_PATH).unlink()
    assert export.main(args) == 0 and list_versions(base) == [1, 2, 3, 4]


def test_command_line(tmp_path, tiny, capsys):
    model_path = tmp_path / "tiny.keras"
    tiny.save(model_path)
    model_path.with_name("tiny.keras.json").write_text(json.dumps({"weights": UNTRAINED_WEIGHTS, "model": "tiny"}))
    base = tmp_path / "models"
    assert export.main(["--model", str(model_path), "--base-path", str(base)]) == 0
    assert json.loads((base / "1" / EXPORT_INFO_PATH).read_text())["weights"] == UNTRAINED_WEIGHTS
    assert export.main(["--model", str(model_path), "--base-path", str(base), "--version", "1"]) == 1
    assert "--force" in capsys.readouterr().err
    assert export.main(["--model", str(model_path), "--base-path", str(base), "--version", "1", "--force"]) == 0
    assert export.main(["--model", str(tmp_path / "missing.keras"), "--base-path", str(base)]) == 2
    assert "download_model.py" in capsys.readouterr().err


@pytest.mark.inception
def test_inception_export_size_and_time(tmp_path, record_property):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None)
    started = time.monotonic()
    target = export_keras_model(model, tmp_path, info={"model": model.name, "weights": UNTRAINED_WEIGHTS}, **QUIET)
    seconds = time.monotonic() - started
    size_mb = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 1e6
    record_property("export_seconds", round(seconds, 1))
    record_property("export_size_mb", round(size_mb, 1))
    print(f"\nInceptionV3 export: {size_mb:.1f} MB in {seconds:.1f} s")
    # Variables stored once (~96 MB of float32 weights); Keras' model.export() would store ~2x.
    assert 80 < size_mb < 130


@pytest.mark.parametrize("name, expected", [
    ("InceptionV3", "InceptionV3"),
    ("inception_v3", "InceptionV3"),  # what download_inceptionv3_model.py's sidecars used to record
    ("convnext_tiny", "ConvNeXtTiny"),  # Keras' own model.name
    ("tiny", "custom"),
    (None, "custom"),
])
def test_model_name_is_a_keras_applications_name_or_custom(name, expected):
    assert export.model_name(name) == expected


@pytest.mark.parametrize("sidecar, flag, expected", [
    ({}, None, {"model": "custom", "preprocessing": "tf", "weights": "unknown"}),
    ({}, "none", {"model": "custom", "preprocessing": "none", "weights": "unknown"}),
    ({"model": "DenseNet121", "weights": "imagenet"}, None,  # no mode recorded: the table's
     {"model": "DenseNet121", "preprocessing": "torch", "weights": "imagenet"}),
    ({"model": "ResNet50", "preprocessing": "caffe", "weights": "untrained", "input_size": [224, 224]}, None,
     {"model": "ResNet50", "preprocessing": "caffe", "weights": "untrained", "input_size": [224, 224]}),
    ({"model": "ResNet50", "preprocessing": "caffe"}, "tf", {"model": "ResNet50", "preprocessing": "tf",
                                                            "weights": "unknown"}),
])
def test_export_info_from_sidecar_and_preprocessing_flag(sidecar, flag, expected, capsys):
    assert export.export_info_from(sidecar, flag) == expected
    assert ("overrides the sidecar's caffe" in capsys.readouterr().out) == (flag == "tf")
