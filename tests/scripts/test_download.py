"""scripts/download_inceptionv3_model.py: offline failure, untrained and local-file weights.

The InceptionV3 cases share one module fixture: one untrained build + save, one load, one build
from the saved weights file.
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

from scripts import download_inceptionv3_model as download
from scripts.export_saved_model import read_model_info

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "download_inceptionv3_model.py"


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = download.main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.e2e
def test_default_without_network_fails_fast(tmp_path):
    if download._weights_host_reachable(download.WEIGHTS_URL, 3):
        pytest.skip("this machine can reach the weights host; the test is about offline machines")
    # An empty Keras cache, so a previously downloaded copy cannot make the script succeed.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"), "HOME": str(tmp_path)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path / "m.keras")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert elapsed < 30
    assert "--weights PATH" in output and "--weights none" in output
    assert "Traceback" not in output
    assert not (tmp_path / "m.keras").exists()


def test_missing_weights_file_and_bad_output_fail_before_building(tmp_path):
    code, _, err = run_main("--weights", str(tmp_path / "nope.h5"), "--output", str(tmp_path / "m.keras"))
    assert code == 1 and "not found" in err
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        download.main(["--weights", "none", "--output", str(tmp_path / "m.h5")])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """The script run once with --weights none: (output path, stdout, stderr, loaded model)."""
    import keras

    output = tmp_path_factory.mktemp("download") / "inception.keras"
    code, out, err = run_main("--weights", "none", "--output", str(output))
    assert code == 0, out + err
    return output, out, err, keras.models.load_model(output, compile=False)


@pytest.mark.inception
def test_untrained_writes_loadable_model_and_sidecar(untrained):
    output, out, err, model = untrained
    assert read_model_info(output) == {"weights": "untrained", "model": "inception_v3",
                                       "input_size": [299, 299], "preprocessing": "tf"}
    assert err.count("UNTRAINED") == 2 and "MEANINGLESS" in err
    assert model.input_shape == (None, 299, 299, 3) and model.output_shape == (None, 1000)
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".")]  # no partial files left


@pytest.mark.inception
def test_weights_from_local_file(untrained, tmp_path):
    _, _, _, reference = untrained
    weights = tmp_path / "inception.weights.h5"
    reference.save_weights(weights)
    output = tmp_path / "from-file.keras"
    code, out, err = run_main("--weights", str(weights), "--output", str(output))
    assert code == 0, out + err
    assert "UNTRAINED" not in err
    assert json.loads(output.with_name(output.name + ".json").read_text())["weights"] == str(weights.resolve())
    import keras

    model = keras.models.load_model(output, compile=False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
