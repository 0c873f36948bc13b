"""Server configuration: tensorflow_model_server's command-line flags and its text-protobuf files.

Flags are parsed absl style (``--flag=value``, ``--flag value``, ``--flag`` / ``--noflag`` for
booleans). The three config files (``--model_config_file``, ``--batching_parameters_file``,
``--monitoring_config_file``) are ASCII protobufs; they are parsed with ``google.protobuf.text_format``
against message classes built here from the same field names and numbers as TF Serving's
``.proto`` files, so syntax, comments and error positions (``line:column``) behave like the real
server. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
DEFAULT_MODEL_PLATFORM = "tensorflow"
# TF Serving's SharedBatchScheduler/BasicBatchScheduler QueueOptions defaults.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10


class ConfigError(Exception):
    """The server cannot start with this configuration; ``code`` is the canonical status name."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BindError(ConfigError):
    """A port the server must serve on cannot be bound (in use, not permitted): exit 1, before any model loads."""


class FlagError(Exception):
    """A command-line flag problem, reported the way absl does."""


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlagSpec:
    name: str
    type: type
    default: Any
    help: str


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("port", int, 8500, "TCP port to listen on for gRPC API (TF Serving's PredictionService and "
                                "ModelService). Disabled if port set to zero."),
    FlagSpec("grpc_socket_path", str, "", "If non-empty, listen to a UNIX socket for gRPC API on the given path. "
                                          "Can be either relative or absolute path."),
    FlagSpec("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc "
                                                "server. (e.g. grpc.max_connection_age_ms=2000)"),
    FlagSpec("grpc_max_threads", int, 4 * (os.cpu_count() or 1),
             "Max grpc server threads to handle grpc messages."),
    FlagSpec("enable_serialization_as_tensor_content", bool, False,
             "Enable serialization of predict response as tensor content (instead of the typed value fields)."),
    FlagSpec("rest_api_port", int, 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API "
                                      "will not be exported. This port must be different than --port."),
    FlagSpec("rest_api_host", str, "0.0.0.0", "Address to bind the HTTP/REST API and the gRPC port to "
                                              "(extension; the real server always binds all interfaces)."),
    FlagSpec("rest_api_num_threads", int, 4 * (os.cpu_count() or 1),
             "Number of threads running model calls for HTTP/REST API requests."),
    FlagSpec("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls."),
    FlagSpec("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)"),
    FlagSpec("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, "
                                         "otherwise required)"),
    FlagSpec("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf from the "
                                           "supplied file name, and serve the models in that file."),
    FlagSpec("model_config_file_poll_wait_seconds", int, 0,
             "Interval in seconds between each poll of the filesystem for model_config_file. If unset or set "
             "to zero, poll will be done exactly once and not periodically."),
    FlagSpec("file_system_poll_wait_seconds", int, 1,
             "Interval in seconds between each poll of the filesystem for new model version. If set to zero "
             "poll will be exactly done once and not periodically."),
    FlagSpec("max_num_load_retries", int, 5, "maximum number of times it retries loading a model after the "
                                             "first failure, before giving up. If set to 0, a load is "
                                             "attempted only once."),
    FlagSpec("load_retry_interval_micros", int, 60 * 1000 * 1000,
             "The interval, in microseconds, between each servable load retry."),
    FlagSpec("enable_batching", bool, False, "enable batching"),
    FlagSpec("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf "
                                                  "from the supplied file name and use the contained values "
                                                  "instead of the defaults."),
    FlagSpec("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from "
                                                "the supplied file name"),
    FlagSpec("enable_model_warmup", bool, True, "Enables model warmup, which triggers lazy initializations "
                                                "at load time, to reduce first request latency."),
    FlagSpec("saved_model_tags", str, "serve", "Comma-separated set of tags corresponding to the meta graph "
                                               "def to load from SavedModel."),
    FlagSpec("tensorflow_intra_op_parallelism", int, 0, "Number of threads to use to parallelize the "
                                                        "execution of an individual op. Auto if 0."),
    FlagSpec("tensorflow_inter_op_parallelism", int, 0, "Controls the number of operators that can be "
                                                        "executed simultaneously. Auto if 0."),
    FlagSpec("version", bool, False, "Display version"),
)
_FLAGS_BY_NAME = {spec.name: spec for spec in FLAGS}
_TRUE_WORDS = {"true", "t", "1", "yes", "y"}
_FALSE_WORDS = {"false", "f", "0", "no", "n"}


@dataclass
class ServerConfig:
    """Every flag of ``python -m model_server``, with tensorflow_model_server's defaults."""

    port: int = 8500
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 4 * (os.cpu_count() or 1)
    enable_serialization_as_tensor_content: bool = False
    rest_api_port: int = 0
    rest_api_host: str = "0.0.0.0"
    rest_api_num_threads: int = 4 * (os.cpu_count() or 1)
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    saved_model_tags: str = "serve"
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    version: bool = False


def flags_usage(program: str = "python -m model_server") -> str:
    """Usage text listing every flag with its type, default and help."""
    lines = [f"usage: {program} [flags]", "Flags:"]
    for spec in FLAGS:
        lines.append(f"\t--{spec.name}={spec.default!s}\t{spec.type.__name__}\t{spec.help}")
    return "\n".join(lines) + "\n"


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise FlagError(f"flag --{name}={text}: Non-boolean argument to boolean flag")


def _convert(spec: FlagSpec, text: str) -> Any:
    if spec.type is bool:
        return _parse_bool(spec.name, text)
    if spec.type is int:
        try:
            return int(text, 10)
        except ValueError:
            raise FlagError(f"flag --{spec.name}={text}: invalid literal for int() with base 10: {text!r}") from None
    return text


def parse_flags(argv: list[str]) -> ServerConfig:
    """Parse absl-style flags (``argv`` without the program name) into a ServerConfig.

    Raises FlagError for unknown flags, missing or malformed values and positional arguments.
    """
    values: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            if index < len(argv):
                raise FlagError(f"unknown argument: {argv[index]}")
            break
        if not arg.startswith("-") or arg == "-":
            raise FlagError(f"unknown argument: {arg}")
        name, has_value, value = arg.lstrip("-").partition("=")
        spec = _FLAGS_BY_NAME.get(name)
        if spec is None and name.startswith("no") and not has_value:
            negated = _FLAGS_BY_NAME.get(name[2:])
            if negated is not None and negated.type is bool:
                values[negated.name] = False
                continue
        if spec is None:
            raise FlagError(f"Unknown command line flag '{name}'")
        if not has_value:
            if spec.type is bool:
                values[name] = True
                continue
            if index >= len(argv):
                raise FlagError(f"Missing value for flag --{name}")
            value = argv[index]
            index += 1
        values[name] = _convert(spec, value)
    return ServerConfig(**values)


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments`` as gRPC options, like server.cc's parseGrpcChannelArgs.

    ``key=value`` pairs separated by commas; a value that parses as a 32-bit integer is passed as
    an int, anything else as a string. Raises ConfigError for an entry without ``=``.
    """
    options: list[tuple[str, int | str]] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, has_value, value = entry.partition("=")
        if not has_value or not key:
            raise ConfigError(f"Invalid --grpc_channel_arguments entry {entry!r}: expected key=value")
        try:
            number = int(value, 10)
        except ValueError:
            options.append((key, value))
            continue
        options.append((key, number if -2**31 <= number < 2**31 else value))
    return options


# ---------------------------------------------------------------------------------------------
# Model, batching and monitoring configuration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionPolicy:
    """FileSystemStoragePathSourceConfig.ServableVersionPolicy: which version directories to serve."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``model_config_list``."""

    name: str
    base_path: str
    model_platform: str = DEFAULT_MODEL_PLATFORM
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingConfig:
    """BatchingParameters with TF Serving's defaults filled in."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False


@dataclass(frozen=True)
class MonitoringConfig:
    """MonitoringConfig.prometheus_config. Unlike the real server, Prometheus is on by default."""

    prometheus_enabled: bool = True
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def _field(name: str, number: int, kind: str, label: str = "optional", type_name: str = "") -> dict:
    return {"name": name, "number": number, "kind": kind, "label": label, "type_name": type_name}


# Field names and numbers copied from TF Serving's model_server_config.proto,
# file_system_storage_path_source.proto, session_bundle_config.proto and monitoring_config.proto.
_SCHEMA: dict[str, list[dict]] = {
    "Latest": [_field("num_versions", 1, "uint32")],
    "All": [],
    "Specific": [_field("versions", 1, "int64", "repeated")],
    "ServableVersionPolicy": [_field("latest", 100, "message", type_name="Latest"),
                              _field("all", 101, "message", type_name="All"),
                              _field("specific", 102, "message", type_name="Specific")],
    "VersionLabelsEntry": [_field("key", 1, "string"), _field("value", 2, "int64")],
    "ModelConfig": [_field("name", 1, "string"), _field("base_path", 2, "string"),
                    _field("model_type", 3, "int32"), _field("model_platform", 4, "string"),
                    _field("model_version_policy", 7, "message", type_name="ServableVersionPolicy"),
                    _field("version_labels", 8, "message", "repeated", "VersionLabelsEntry")],
    "ModelConfigList": [_field("config", 1, "message", "repeated", "ModelConfig")],
    "ModelServerConfig": [_field("model_config_list", 1, "message", type_name="ModelConfigList")],
    "BatchingParameters": [
        _field("max_batch_size", 1, "message", type_name=".google.protobuf.Int64Value"),
        _field("batch_timeout_micros", 2, "message", type_name=".google.protobuf.Int64Value"),
        _field("max_enqueued_batches", 3, "message", type_name=".google.protobuf.Int64Value"),
        _field("num_batch_threads", 4, "message", type_name=".google.protobuf.Int64Value"),
        _field("thread_pool_name", 5, "message", type_name=".google.protobuf.StringValue"),
        _field("allowed_batch_sizes", 6, "int64", "repeated"),
        _field("pad_variable_length_inputs", 7, "bool"),
        _field("enable_large_batch_splitting", 8, "message", type_name=".google.protobuf.BoolValue"),
        _field("max_execution_batch_size", 9, "message", type_name=".google.protobuf.Int64Value")],
    "PrometheusConfig": [_field("enable", 1, "bool"), _field("path", 2, "string")],
    "MonitoringConfig": [_field("prometheus_config", 1, "message", type_name="PrometheusConfig")],
}
_MAP_ENTRIES = {"VersionLabelsEntry"}
_ONEOFS = {"ServableVersionPolicy": "policy_choice"}  # every field of these messages is in the oneof
_PACKAGE = "model_server.config_proto"


@functools.cache
def _message_classes() -> dict[str, type]:
    """Build the config message classes once, in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    kinds = {"string": "TYPE_STRING", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint32": "TYPE_UINT32",
             "bool": "TYPE_BOOL", "message": "TYPE_MESSAGE"}
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(name="model_server_config_schema.proto", package=_PACKAGE,
                                                    syntax="proto3", dependency=[wrappers_pb2.DESCRIPTOR.name])
    for message_name, fields in _SCHEMA.items():
        message = file_proto.message_type.add(name=message_name)
        if message_name in _MAP_ENTRIES:
            message.options.map_entry = True
        if message_name in _ONEOFS:
            message.oneof_decl.add(name=_ONEOFS[message_name])
        for spec in fields:
            proto_field = message.field.add(
                name=spec["name"], number=spec["number"],
                type=getattr(descriptor_pb2.FieldDescriptorProto, kinds[spec["kind"]]),
                label=getattr(descriptor_pb2.FieldDescriptorProto, f"LABEL_{spec['label'].upper()}"))
            if message_name in _ONEOFS:
                proto_field.oneof_index = 0
            if spec["type_name"]:
                type_name = spec["type_name"]
                proto_field.type_name = type_name if type_name.startswith(".") else f".{_PACKAGE}.{type_name}"
    pool.Add(file_proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in _SCHEMA}


def _read_text_proto(path: str, message_name: str):
    from google.protobuf import text_format

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}; No such file or directory", "NOT_FOUND") from None
    except OSError as exc:
        raise ConfigError(f"{path}; {exc.strerror}", "FAILED_PRECONDITION") from None
    message = _message_classes()[message_name]()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"Invalid {message_name} text proto in {path}: {exc}") from None
    return message


def _version_policy(proto) -> VersionPolicy:
    choice = proto.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if choice == "latest":
        return VersionPolicy("latest", num_versions=proto.latest.num_versions or 1)
    return VersionPolicy()


def parse_model_config_text(path: str) -> list[ModelConfig]:
    """Read a ModelServerConfig text proto and return its ``model_config_list`` entries."""
    return model_configs_from_proto(_read_text_proto(path, "ModelServerConfig"))


def model_configs_from_proto(proto) -> list[ModelConfig]:
    """The ``model_config_list`` entries of a ModelServerConfig message.

    Takes our schema's message or TF Serving's own ``tensorflow.serving.ModelServerConfig`` (the
    gRPC ReloadConfigRequest carries one): both have the same field names.
    """
    models = []
    for entry in proto.model_config_list.config:
        models.append(ModelConfig(
            name=entry.name, base_path=entry.base_path,
            model_platform=entry.model_platform or DEFAULT_MODEL_PLATFORM,
            version_policy=_version_policy(entry.model_version_policy),
            version_labels=dict(entry.version_labels)))
    return models


def parse_batching_parameters(path: str) -> BatchingConfig:
    """Read a BatchingParameters text proto, filling TF Serving's defaults for unset fields."""
    proto = _read_text_proto(path, "BatchingParameters")
    defaults = BatchingConfig()

    def wrapped(name: str, default: int) -> int:
        return getattr(proto, name).value if proto.HasField(name) else default

    config = BatchingConfig(
        max_batch_size=wrapped("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=wrapped("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=wrapped("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=wrapped("num_batch_threads", defaults.num_batch_threads),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs)
    validate_batching(config)
    return config


def validate_batching(config: BatchingConfig) -> None:
    """Reject batching parameters the real server rejects (messages from bundle_factory_util.cc)."""
    if config.max_batch_size <= 0:
        raise ConfigError(f"max_batch_size must be positive; was {config.max_batch_size}")
    if config.num_batch_threads <= 0:
        raise ConfigError(f"num_batch_threads must be positive; was {config.num_batch_threads}")
    if config.max_enqueued_batches <= 0:
        raise ConfigError(f"max_enqueued_batches must be positive; was {config.max_enqueued_batches}")
    sizes = config.allowed_batch_sizes
    if sizes:
        if list(sizes) != sorted(set(sizes)) or sizes[0] <= 0:
            raise ConfigError("allowed_batch_sizes entries must be positive and monotonically increasing")
        if sizes[-1] != config.max_batch_size:
            raise ConfigError("Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                              f"{sizes[-1]}; expected {config.max_batch_size}")


def parse_monitoring_config(path: str) -> MonitoringConfig:
    """Read a MonitoringConfig text proto (``prometheus_config { enable: true path: "..." }``)."""
    proto = _read_text_proto(path, "MonitoringConfig")
    prometheus = proto.prometheus_config
    return MonitoringConfig(prometheus_enabled=prometheus.enable,
                            prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH)


def _is_relative_path(uri: str) -> bool:
    """Like TF Serving's UriIsRelativePath: no scheme, no host and not absolute."""
    return "://" not in uri and not os.path.isabs(uri)


def validate_model_configs(models: list[ModelConfig]) -> None:
    """Apply server_core.cc's checks: unique names, absolute base paths, the tensorflow platform."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in models:
        if _is_relative_path(model.base_path):
            raise ConfigError(f"Expected model {model.name} to have an absolute path or URI; "
                              f"got base_path()={model.base_path}")
        if "://" in model.base_path:
            raise ConfigError(f"Model {model.name}: only local file system base paths are supported; "
                              f"got base_path()={model.base_path}", "UNIMPLEMENTED")
        if model.model_platform != DEFAULT_MODEL_PLATFORM:
            raise ConfigError(f"Model {model.name} requested unsupported model platform: "
                              f"{model.model_platform}")


def load_model_configs(config: ServerConfig) -> list[ModelConfig]:
    """The models to serve: from --model_config_file, or the single --model_name/--model_base_path."""
    if config.model_config_file:
        models = parse_model_config_text(config.model_config_file)
    else:
        models = [ModelConfig(name=config.model_name, base_path=config.model_base_path)]
    validate_model_configs(models)
    return models


def load_batching_config(config: ServerConfig) -> BatchingConfig | None:
    """BatchingConfig when --enable_batching, else None; a parameters file without it is an error."""
    if not config.enable_batching:
        if config.batching_parameters_file:
            raise ConfigError("server_options.batching_parameters_file is set without setting "
                              "server_options.enable_batching to true.")
        return None
    if config.batching_parameters_file:
        return parse_batching_parameters(config.batching_parameters_file)
    return BatchingConfig()


def load_monitoring_config(config: ServerConfig) -> MonitoringConfig:
    """MonitoringConfig from --monitoring_config_file, or ours (Prometheus on at the default path)."""
    if config.monitoring_config_file:
        return parse_monitoring_config(config.monitoring_config_file)
    return MonitoringConfig()


def format_model_config_text(models: dict[str, str]) -> str:
    """A ModelServerConfig text proto serving each ``name -> base_path`` (absolute) with the default
    version policy: what ``--model_config_file`` takes, for this server and ``tensorflow_model_server``."""
    # JSON's escapes for '"' and '\\' are text proto's too; other characters stay as UTF-8.
    entries = "".join(f"  config {{\n    name: {_quoted(name)}\n    base_path: {_quoted(str(base_path))}\n"
                      f"    model_platform: \"{DEFAULT_MODEL_PLATFORM}\"\n  }}\n"
                      for name, base_path in models.items())
    return f"model_config_list {{\n{entries}}}\n"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
