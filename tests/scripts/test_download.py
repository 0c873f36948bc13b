"""scripts/download_model.py and its InceptionV3 wrapper: offline failure, untrained and local-file weights.

Each listed model is built once with untrained weights (``--weights none``), saved and loaded back;
only the two smallest are exported, to keep the CPU load low.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scripts import download_inceptionv3_model as inception_download
from scripts import download_model
from scripts import export_saved_model as export
from scripts.model_sidecar import read_model_info, sidecar_path
from serving_contract.applications import APPLICATIONS
from serving_contract.export import LABELS_ASSET_PATH, UNTRAINED_WEIGHTS, read_export_info
from serving_contract.labels import imagenet_labels, labels_from_info, parse_labels_text
from serving_contract.versions import latest_version

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "scripts" / "download_inceptionv3_model.py"
LISTED_MODELS = ("InceptionV3", "MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny")
# Independent of the table: the mode each model's keras.applications.<module>.preprocess_input applies.
EXPECTED_MODES = {"InceptionV3": "tf", "MobileNetV2": "tf", "ResNet50": "caffe", "EfficientNetB0": "none",
                  "DenseNet121": "torch", "ConvNeXtTiny": "none"}


def run_main(main, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.e2e
def test_default_without_network_fails_fast(tmp_path):
    if download_model.weights_host_reachable(inception_download.INCEPTION_V3.weights_url, 3):
        pytest.skip("this machine can reach the weights host; the test is about offline machines")
    # An empty Keras cache, so a previously downloaded copy cannot make the script succeed.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(WRAPPER), "--output", str(tmp_path / "m.keras")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert elapsed < 30
    assert "--weights PATH" in output and "--weights none" in output
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels.h5" in output  # the file to fetch elsewhere
    assert "Traceback" not in output
    assert not (tmp_path / "m.keras").exists()


def test_offline_message_names_the_models_own_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(download_model, "weights_host_reachable", lambda url, timeout: False)
    with pytest.raises(download_model.DownloadError, match="ResNet50") as error:
        download_model.build_model(APPLICATIONS["ResNet50"], "imagenet", log=lambda _msg: None)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in str(error.value)


def test_missing_weights_file_and_bad_output_fail_before_building(tmp_path):
    code, _, err = run_main(download_model.main, "--model", "MobileNetV2", "--weights", str(tmp_path / "nope.h5"),
                            "--output", str(tmp_path / "m.keras"))
    assert code == 1 and "not found" in err
    code, _, err = run_main(inception_download.main, "--weights", str(tmp_path / "nope.h5"),
                            "--output", str(tmp_path / "m.keras"))
    assert code == 1 and "not found" in err
    for main, args in [(download_model.main, ["--model", "MobileNetV2", "--weights", "none"]),
                       (inception_download.main, ["--weights", "none"])]:
        with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
            main([*args, "--output", str(tmp_path / "m.h5")])
        assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())


def test_unknown_model_name_is_a_usage_error_listing_the_choices():
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(err):
        download_model.main(["--model", "NotANet", "--weights", "none"])
    assert exit_info.value.code == 2
    assert "NotANet" in err.getvalue() and "MobileNetV2" in err.getvalue() and "ConvNeXtTiny" in err.getvalue()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """Output path of ``download_model.py --model NAME --weights none`` for each listed model, built on demand."""
    directory = tmp_path_factory.mktemp("download")
    built = {}

    def get(name: str) -> tuple[Path, str]:
        if name not in built:
            output = directory / f"{name}.keras"
            code, out, err = run_main(download_model.main, "--model", name, "--weights", "none",
                                      "--output", str(output))
            assert code == 0, out + err
            built[name] = output, err
        return built[name]

    return get


@pytest.mark.applications
@pytest.mark.parametrize("name", LISTED_MODELS)
def test_untrained_model_saved_loadable_with_its_sidecar(downloads, name):
    import keras

    output, err = downloads(name)
    height, width = APPLICATIONS[name].input_size
    assert read_model_info(output) == {"weights": UNTRAINED_WEIGHTS, "model": name,
                                       "input_size": [height, width], "preprocessing": EXPECTED_MODES[name]}
    assert err.count("UNTRAINED") == 2 and "MEANINGLESS" in err and name in err
    model = keras.models.load_model(output, compile=False)
    assert model.input_shape == (None, height, width, 3) and model.output_shape == (None, 1000)
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".")]  # no partial files left


@pytest.mark.applications
@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetB0"])
def test_downloaded_model_exports_with_imagenet_labels(downloads, name, tmp_path):
    output, _ = downloads(name)
    code, out, err = run_main(export.main, "--model", str(output), "--base-path", str(tmp_path))
    assert code == 0, out + err
    version_dir = tmp_path / str(latest_version(tmp_path))
    info = read_export_info(version_dir)
    assert (info["model"], info["preprocessing"], info["weights"]) == (name, EXPECTED_MODES[name], UNTRAINED_WEIGHTS)
    assert info["input_size"] == [224, 224] and info["classes"] == 1000
    assert labels_from_info(info) == list(imagenet_labels())
    assert labels_from_info(info)[817] == ("n04285008", "sports_car")  # Keras' imagenet_class_index.json
    assert parse_labels_text((version_dir / LABELS_ASSET_PATH).read_text()) == list(imagenet_labels())


@pytest.mark.applications
def test_weights_from_local_file(downloads, tmp_path):
    import keras

    reference = keras.models.load_model(downloads("MobileNetV2")[0], compile=False)
    weights = tmp_path / "mobilenet_v2.weights.h5"
    reference.save_weights(weights)
    output = tmp_path / "from-file.keras"
    code, out, err = run_main(download_model.main, "--model", "mobilenetv2", "--weights", str(weights),
                              "--output", str(output))
    assert code == 0, out + err
    assert "UNTRAINED" not in err
    assert json.loads(sidecar_path(output).read_text())["weights"] == str(weights.resolve())
    model = keras.models.load_model(output, compile=False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


# Keras warns about each layer it cannot match before it gives up; the error is what this test is about.
@pytest.mark.applications
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_wrong_weights_file_is_a_clear_error(downloads, tmp_path):
    import keras

    weights = tmp_path / "densenet.weights.h5"
    keras.models.load_model(downloads("DenseNet121")[0], compile=False).save_weights(weights)
    code, _, err = run_main(download_model.main, "--model", "MobileNetV2", "--weights", str(weights),
                            "--output", str(tmp_path / "m.keras"))
    assert code == 1 and "cannot load weights" in err and "MobileNetV2" in err
    assert "Traceback" not in err and not (tmp_path / "m.keras").exists()


@pytest.mark.inception
def test_inception_wrapper_keeps_the_tutorial_interface(tmp_path):
    output = tmp_path / "inception.keras"
    code, out, err = run_main(inception_download.main, "--weights", "none", "--output", str(output))
    assert code == 0, out + err
    assert read_model_info(output) == {"weights": UNTRAINED_WEIGHTS, "model": "InceptionV3",
                                       "input_size": [299, 299], "preprocessing": "tf"}
    assert err.count("UNTRAINED") == 2 and "InceptionV3" in err
    assert inception_download.DEFAULT_OUTPUT == REPO / "scripts" / "inception.keras"
