"""serving_contract.preprocessing: the modes and their Keras constants."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving_contract.preprocessing import DEFAULT_MODE, MODES, check_mode


@pytest.mark.parametrize("mode", MODES)
def test_known_modes_pass(mode):
    check_mode(mode)


@pytest.mark.parametrize("mode", ["inception", "TF", "", "caffe "])
def test_unknown_mode_names_the_choices(mode):
    expected = f"unknown preprocessing mode {mode!r}; expected one of tf, caffe, torch, none"
    with pytest.raises(ValueError, match=expected):
        check_mode(mode)


def test_default_mode_is_a_mode():
    assert DEFAULT_MODE in MODES


@pytest.mark.e2e
def test_contract_imports_nothing_heavy():
    # The gateway and the exporter's --help import it: no TensorFlow, Keras, numpy, Flask.
    code = ("import sys, serving_contract.export, serving_contract.versions, serving_contract.preprocessing; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'flask', 'flask_server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
