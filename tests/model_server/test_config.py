"""Flags and config files, plus start-up failures of the real process (no model is loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model_server import config
from model_server.config import ConfigError, FlagError, VersionPolicy, parse_flags
from tests.support.processes import REPO_ROOT


def test_flag_forms():
    parsed = parse_flags(["--port=0", "--rest_api_port", "8501", "--enable_batching", "--noenable_model_warmup",
                          "-model_name=x", "--file_system_poll_wait_seconds=3"])
    assert (parsed.port, parsed.rest_api_port, parsed.model_name) == (0, 8501, "x")
    assert parsed.enable_batching is True and parsed.enable_model_warmup is False
    assert parsed.file_system_poll_wait_seconds == 3
    assert parse_flags(["--enable_batching=false"]).enable_batching is False


def test_defaults_are_tf_servings():
    parsed = parse_flags([])
    assert (parsed.port, parsed.rest_api_port, parsed.model_name) == (8500, 0, "default")
    assert (parsed.rest_api_timeout_in_ms, parsed.file_system_poll_wait_seconds) == (30000, 1)
    assert (parsed.max_num_load_retries, parsed.rest_api_host) == (5, "0.0.0.0")


@pytest.mark.parametrize("argv, message", [
    (["--foo=1"], "Unknown command line flag 'foo'"),
    (["--port=abc"], "invalid literal for int()"),
    (["--enable_batching=maybe"], "Non-boolean argument"),
    (["--model_name"], "Missing value for flag --model_name"),
    (["positional"], "unknown argument: positional"),
])
def test_flag_errors(argv, message):
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_model_config_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("""# two models
model_config_list {
  config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 } }
  config { name: "b" base_path: "/models/b" model_version_policy { latest { num_versions: 2 } } }
  config { name: "c" base_path: "/models/c" model_version_policy { all {} } }
}""")
    a, b, c = config.parse_model_config_text(str(path))
    assert a.version_policy == VersionPolicy("specific", versions=(1, 2))
    assert a.version_labels == {"stable": 1, "canary": 2}
    assert b.version_policy == VersionPolicy("latest", num_versions=2)
    assert c.version_policy == VersionPolicy("all")
    assert b.model_platform == "tensorflow"


def test_model_config_syntax_errors_have_line_and_column(tmp_path):
    path = tmp_path / "bad.config"
    path.write_text('model_config_list {\n  config { name: "a" bogus: 1 }\n}\n')
    with pytest.raises(ConfigError, match=r"2:\d+ : .*bogus"):
        config.parse_model_config_text(str(path))


@pytest.mark.parametrize("models, message", [
    ([config.ModelConfig("a", "relative/path")],
     "Expected model a to have an absolute path or URI; got base_path()=relative/path"),
    ([config.ModelConfig("a", "/x"), config.ModelConfig("a", "/y")], "Illegal to list model a multiple times"),
])
def test_model_config_validation(models, message):
    with pytest.raises(ConfigError) as caught:
        config.validate_model_configs(models)
    assert message in str(caught.value)


def test_batching_parameters(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 5000 }\n"
                    "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\npad_variable_length_inputs: true\n")
    parsed = config.parse_batching_parameters(str(path))
    assert (parsed.max_batch_size, parsed.batch_timeout_micros, parsed.allowed_batch_sizes) == (32, 5000, (8, 32))
    assert parsed.max_enqueued_batches == 10 and parsed.pad_variable_length_inputs
    path.write_text("max_batch_size { value: 32 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ConfigError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        config.parse_batching_parameters(str(path))


def test_batching_file_requires_enable_batching():
    with pytest.raises(ConfigError, match="batching_parameters_file is set without setting"):
        config.load_batching_config(parse_flags(["--batching_parameters_file=/x"]))


def test_monitoring_config(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true path: "/metrics" }')
    assert config.parse_monitoring_config(str(path)) == config.MonitoringConfig(True, "/metrics")
    assert config.load_monitoring_config(parse_flags([])).prometheus_path == "/monitoring/prometheus/metrics"


def test_missing_config_file_is_not_found(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.parse_model_config_text(str(tmp_path / "nope.config"))
    assert caught.value.code == "NOT_FOUND"


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_server", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.e2e
def test_relative_model_base_path_fails_like_the_real_server():
    result = run_server("--rest_api_port=0", "--port=0", "--model_name=m", "--model_base_path=models/m")
    assert result.returncode == 255
    assert ("Failed to start server. Error: INVALID_ARGUMENT: Expected model m to have an absolute path or URI; "
            "got base_path()=models/m") in result.stdout


@pytest.mark.e2e
def test_unknown_flag_fails_like_absl():
    result = run_server("--no_such_flag=1")
    assert result.returncode == 1
    assert "FATAL Flags parsing error: Unknown command line flag 'no_such_flag'" in result.stderr
