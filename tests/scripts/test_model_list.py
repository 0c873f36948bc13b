"""scripts/model_list.py: which models auto_cmd serves and the two files it writes for them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flask_server.config import GatewayConfig
from flask_server.model_config import load_model_specs
from model_server.config import parse_model_config_text
from scripts.auto_cmd import parse_args
from scripts.model_list import ServedModelEntry, chosen_models, missing_versions, parse_model_option, write_serving_files


def test_model_option_is_name_equals_base_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_model_option("MobileNetV2=models/m") == ServedModelEntry("MobileNetV2", tmp_path / "models" / "m")
    for bad in ("MobileNetV2", "=models/m", "MobileNetV2="):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=BASE_PATH"):
            parse_model_option(bad)


def test_files_serve_every_model_at_its_lowercased_route(tmp_path):
    models = [ServedModelEntry("InceptionV3", tmp_path / "a b"), ServedModelEntry("My.Model", tmp_path / "ü")]
    model_config, gateway_config = write_serving_files(models, tmp_path)
    # test that the model server reads back exactly the models, and the gateway one route each,
    # stating nothing but the model name (the rest comes from the model server's metadata)
    assert [(c.name, Path(c.base_path)) for c in parse_model_config_text(str(model_config))] == [
        (m.name, m.base_path) for m in models]
    specs = load_model_specs(GatewayConfig(models_config=str(gateway_config), model_server_url="http://ms:1"))
    assert {route: (spec.model_name, spec.explicit) for route, spec in specs.items()} == {
        "inceptionv3": ("InceptionV3", {"model_name"}), "my.model": ("My.Model", {"model_name"})}
    # test that a config file names the models of a run
    assert chosen_models(parse_args(["--model-config-file", str(model_config)])) == models
    with pytest.raises(ValueError, match="use one of them"):
        chosen_models(parse_args(["--model-config-file", str(model_config), "--model", "Other=/x"]))


def test_one_model_by_default_and_routes_must_differ(tmp_path):
    assert chosen_models(parse_args(["--model-base-path", str(tmp_path), "--model-name", "MobileNetV2"])) == [
        ServedModelEntry("MobileNetV2", tmp_path.resolve())]
    assert chosen_models(parse_args(["--model-base-path", str(tmp_path)]))[0].route == "imageclassifier"
    with pytest.raises(ValueError, match="'A' and 'a' would share the gateway route 'a'"):
        chosen_models(parse_args(["--model", "A=/x", "--model", "a=/y"]))


def test_models_without_a_version_are_named(tmp_path):
    (tmp_path / "ready" / "1").mkdir(parents=True)
    (tmp_path / "ready" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    models = [ServedModelEntry("Ready", tmp_path / "ready"), ServedModelEntry("Empty", tmp_path / "empty")]
    assert missing_versions(models) == [models[1]]


def test_an_unreadable_config_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { nme: 'x' } }\n")
    with pytest.raises(ValueError, match=f"^{bad}: "):
        chosen_models(parse_args(["--model-config-file", str(bad)]))
