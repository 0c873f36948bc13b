"""The models TOML file (model_config.py): defaults, the example file, and strict validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flask_server.config import ConfigError, GatewayConfig
from flask_server.model_config import DEFAULT_ROUTE, ModelSpec, load_model_specs

EXAMPLE = Path(__file__).resolve().parents[2] / "flask_server" / "models.example.toml"


def specs_from(tmp_path: Path, text: str) -> dict[str, ModelSpec]:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return load_model_specs(GatewayConfig(model_server_url="http://ms:9000", models_config=str(path)))


def test_default_is_the_tutorials_single_model():
    specs = load_model_specs(GatewayConfig(model_server_url="http://ms:9000"))
    assert specs == {DEFAULT_ROUTE: ModelSpec(route="imageclassifier", model_server_url="http://ms:9000",
                                              model_name="ImageClassifier", signature="serving_uint8",
                                              input_name="pixels_bytes", input_format="raw_uint8_b64",
                                              input_size=(299, 299), preprocessing="tf", interpolation="nearest",
                                              jpeg_draft=False, labels="imagenet", top_k=5)}


def test_example_file_loads_and_documents_the_defaults():
    specs = load_model_specs(GatewayConfig(models_config=str(EXAMPLE)))
    # Only the keys a table states are explicit; the commented-out values are the defaults.
    assert specs["imageclassifier"].explicit == {"model_server_url", "model_name"}
    assert (dataclasses.replace(specs["imageclassifier"], explicit=frozenset())
            == load_model_specs(GatewayConfig())[DEFAULT_ROUTE])
    assert specs["mobilenetv2"].explicit == {"model_name"}
    resnet = specs["resnet50"]
    # A float signature picks the JSON input format and the "image" input by default.
    assert (resnet.input_format, resnet.input_name, resnet.version_label) == ("json", "image", "stable")


@pytest.mark.parametrize("text, message", [
    ("[models.m]\nmodel_nam = 'x'\n", r"models\.m: unknown key 'model_nam'"),
    ("[models.m]\nversion = 'latest'\n", r"models\.m\.version: expected a non-negative integer, got 'latest'"),
    ("[models.m]\nversion = -1\n", r"models\.m\.version: expected a non-negative integer"),
    ("[models.m]\nversion = 1\nversion_label = 'stable'\n", r"models\.m\.version_label: set version or"),
    ("[models.m]\ninput_size = [299]\n", r"models\.m\.input_size: expected \[height, width\]"),
    ("[models.m]\ninput_size = [0, 10]\n", r"models\.m\.input_size"),
    ("[models.m]\ninput_size = [true, 10]\n", r"models\.m\.input_size"),
    ("[models.m]\npreprocessing = 'inception'\n", r"models\.m\.preprocessing: expected one of tf, caffe"),
    ("[models.m]\ninterpolation = 'linear'\n", r"models\.m\.interpolation"),
    ("[models.m]\ninput_format = 'png'\n", r"models\.m\.input_format"),
    ("[models.m]\njpeg_draft = 1\n", r"models\.m\.jpeg_draft: expected true or false"),
    ("[models.m]\ntop_k = 0\n", r"models\.m\.top_k"),
    ("[models.m]\ntop_k = true\n", r"models\.m\.top_k"),
    ("[models.m]\nmodel_server_url = 'ms:9000'\n", r"models\.m\.model_server_url: expected an http"),
    ("[models.m]\nmodel_name = 'a/b'\n", r"models\.m\.model_name"),
    ("[models.m]\nprotocol = 'v3'\n", r"models\.m\.protocol: expected one of rest, grpc, got 'v3'"),
    ("[models.m]\nprotocol = 'grpc'\n", r"models\.m\.model_server_url: expected grpc://host:port with protocol"),
    ("[models.m]\nprotocol = 'rest'\nmodel_server_url = 'grpc://ms:8500'\n",
     r"models\.m\.model_server_url: expected an http\(s\) URL"),
    ("[models.'a b']\n", r"models\.a b: route names may only use"),
    ("[models]\nm = 3\n", r"models\.m: expected a table"),
    ("[model.m]\n", r"unknown top-level key\(s\) \['model'\]"),
    ("", r"no models"),
    ("[models.m\n", r"cannot read it"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        specs_from(tmp_path, text)
    assert str(tmp_path / "models.toml") in str(info.value)


def test_a_grpc_url_means_the_grpc_protocol(tmp_path):
    specs = specs_from(tmp_path, "[models.a]\nmodel_server_url = 'grpc://ms:8500'\n"
                                 "[models.b]\nprotocol = 'grpc'\nmodel_server_url = 'grpc://ms:8500'\n[models.c]\n")
    assert [specs[route].protocol for route in "abc"] == ["grpc", "grpc", "rest"]
    default = load_model_specs(GatewayConfig(model_server_url="grpc://127.0.0.1:8500"))[DEFAULT_ROUTE]
    assert (default.protocol, default.model_server_url) == ("grpc", "grpc://127.0.0.1:8500")
    with pytest.raises(ConfigError, match="MODEL_SERVER_URL must be an http"):
        GatewayConfig(model_server_url="ms:8500").validate()


def test_every_exported_signature_has_gateway_defaults():
    # test that a signature added to the export contract (serving_topk included: the gateway calls it
    # when a version has it) cannot go without an input format here
    from flask_server import model_config as models
    from serving_contract import export

    assert set(models.KNOWN_SIGNATURES) == set(export.SIGNATURES)
    assert models.DEFAULT_SIGNATURE in export.SIGNATURES
    assert export.SERVING_BYTES.endswith(models.BYTES_SUFFIX)


@pytest.mark.parametrize("signature, expected", [
    ("serving_uint8", ("raw_uint8_b64", "pixels_bytes")),
    ("serving_bytes", ("raw_float32_b64", "pixels_bytes")),
    ("serving_default", ("json", "image")),
    ("my_own_bytes", ("raw_float32_b64", "pixels_bytes")),  # any other *_bytes: float32 bytes
    ("predict", ("json", "image")),
])
def test_each_signature_gets_its_input_format_and_name(tmp_path, signature, expected):
    spec = specs_from(tmp_path, f'[models.m]\nsignature = "{signature}"\n')["m"]
    assert (spec.input_format, spec.input_name) == expected
