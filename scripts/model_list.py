"""Which models ``auto_cmd.py`` serves, and the two files that serve them from one model server.

The models come from repeated ``--model NAME=BASE_PATH``, from a TF Serving model config file
(``--model-config-file``), or from ``--model-name`` / ``--model-base-path`` (one model, as the
tutorial does). ``write_serving_files`` writes the model server's model config file (text
protobuf, for ``--model_config_file``; the real ``tensorflow_model_server`` reads the same file)
and the gateway's ``MODELS_CONFIG``, one route per model: ``/v1/models/<name lowercased>/predict``.
The gateway learns everything else about each model from the model server's metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from flask_server.model_config import render_models_config, route_for_model
from model_server.config import ConfigError, format_model_config_text, parse_model_config_text
from serving_contract.versions import list_versions

MODEL_CONFIG_FILE_NAME = "models.config"
GATEWAY_CONFIG_FILE_NAME = "models.toml"


@dataclasses.dataclass(frozen=True)
class ServedModelEntry:
    """One model the model server serves: its name there and the folder of its versions."""

    name: str
    base_path: Path

    @property
    def route(self) -> str:
        """The gateway's route for it."""
        return route_for_model(self.name)


def parse_model_option(value: str) -> ServedModelEntry:
    """``--model NAME=BASE_PATH`` (argparse ``type``): the base path is made absolute."""
    name, equals, base_path = value.partition("=")
    if not equals or not name or not base_path:
        raise argparse.ArgumentTypeError(f"expected NAME=BASE_PATH, got {value!r}")
    return ServedModelEntry(name, Path(base_path).expanduser().resolve())


def models_from_config_file(path: Path) -> list[ServedModelEntry]:
    """The models a TF Serving model config file lists; ValueError naming the file if unreadable."""
    try:
        configs = parse_model_config_text(str(path))
    except (ConfigError, OSError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not configs:
        raise ValueError(f"{path}: no model in model_config_list")
    return [ServedModelEntry(config.name, Path(config.base_path)) for config in configs]


def chosen_models(args: argparse.Namespace) -> list[ServedModelEntry]:
    """The models of this run: ``--model-config-file``, else the ``--model`` list, else the one
    ``--model-name`` at ``--model-base-path``. ValueError for both lists at once, an unreadable
    config file or a route two models would share."""
    if args.model_config_file and args.model:
        raise ValueError("--model and --model-config-file both list models; use one of them")
    if args.model_config_file:
        models = models_from_config_file(args.model_config_file)
    elif args.model:
        models = list(args.model)
    else:
        models = [ServedModelEntry(args.model_name, args.model_base_path.resolve())]
    routes: dict[str, str] = {}
    for model in models:
        if model.route in routes:
            raise ValueError(f"models {routes[model.route]!r} and {model.name!r} would share the gateway route "
                             f"{model.route!r}; model names must differ in more than case")
        routes[model.route] = model.name
    return models


def missing_versions(models: Sequence[ServedModelEntry]) -> list[ServedModelEntry]:
    """The models whose base path holds no complete version yet."""
    return [model for model in models if not list_versions(model.base_path)]


def write_serving_files(models: Sequence[ServedModelEntry], directory: Path) -> tuple[Path, Path]:
    """Write the model config file and the gateway's MODELS_CONFIG into ``directory``; return both paths."""
    model_config = directory / MODEL_CONFIG_FILE_NAME
    model_config.write_text(format_model_config_text({model.name: str(model.base_path) for model in models}),
                            encoding="utf-8")
    gateway_config = directory / GATEWAY_CONFIG_FILE_NAME
    gateway_config.write_text(render_models_config([model.name for model in models]), encoding="utf-8")
    return model_config, gateway_config
