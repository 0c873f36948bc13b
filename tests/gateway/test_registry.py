"""The model registry (registry.py): labels and transports built at start-up, one per model server."""

from __future__ import annotations

import pytest

from flask_server.config import ConfigError, GatewayConfig
from flask_server.model_config import load_model_specs
from flask_server.registry import ModelRegistry
from tests.gateway.test_model_config import specs_from


def test_labels_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    specs = specs_from(tmp_path, '[models.m]\nlabels = "labels.txt"\n')
    assert specs["m"].labels == str(tmp_path / "labels.txt")
    assert specs["m"].model_server_url == "http://ms:9000"
    assert ModelRegistry(specs, GatewayConfig()).get("m").labels == [("a", "a"), ("b", "b")]


def test_missing_file_and_bad_labels_fail_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_model_specs(GatewayConfig(models_config=str(tmp_path / "absent.toml")))
    specs = specs_from(tmp_path, '[models.m]\nlabels = "nope.txt"\n')
    with pytest.raises(ConfigError, match=r"models\.m\.labels: cannot read labels file"):
        ModelRegistry(specs, GatewayConfig())


def test_one_connection_pool_per_model_server(tmp_path):
    specs = specs_from(tmp_path, "[models.a]\n[models.b]\n[models.c]\nmodel_server_url = 'http://other:9000'\n")
    registry = ModelRegistry(specs, GatewayConfig())
    assert sorted(registry.clients) == ["http://ms:9000", "http://other:9000"]
    assert registry.get("a").client is registry.get("b").client
