"""The gRPC front: TF Serving's PredictionService and ModelService on ``--port`` (and a UNIX socket),
plus the services passed in (the Open Inference Protocol's, ``v2_grpc.py``).

With ``v2_grpc.py``, the only module that imports ``grpc``. Each RPC goes to ``GrpcApi`` (the request logic on the
official protos, shared repository and batching queue with REST); a ``ServingError`` becomes the
gRPC status with the same canonical code and message, anything else INTERNAL (logged, never a
traceback to the client). Like ``tensorflow_model_server``:

* messages up to 2 GiB - 1 are accepted (``SetMaxMessageSize(INT32_MAX)``) unless
  ``--grpc_channel_arguments`` sets ``grpc.max_receive_message_length`` (gRPC then answers
  RESOURCE_EXHAUSTED itself);
* ``--grpc_max_threads`` bounds the threads handling RPCs;
* the client's deadline bounds the model call (DEADLINE_EXCEEDED);
* on SIGTERM new RPCs are refused and in-flight ones get a grace period to finish.

Our extension: the TCP port binds ``--rest_api_host`` (the real server always binds 0.0.0.0), and a
taken port fails start-up (``grpc.so_reuseport`` is off) instead of silently sharing it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.message import Message
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from model_server.config import BindError
from model_server.errors import ServingError
from model_server.grpc_api import GrpcApi
from model_server.monitoring import ENTRYPOINT_GRPC, Metrics

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2**31 - 1  # server.cc: builder.SetMaxMessageSize(std::numeric_limits<int32_t>::max())
DEFAULT_OPTIONS: dict[str, int | str] = {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.so_reuseport": 0,
}
INTERNAL_ERROR_MESSAGE = "Internal server error"
# time_remaining() beyond this (a year) means the client set no deadline: gRPC then reports ~9.2e18 s,
# more than any wait accepts (a Future's result() raises OverflowError for it).
NO_DEADLINE_S = 365 * 24 * 3600.0
REQUEST_ID_METADATA = "x-request-id"  # the gateway's request id, logged like REST's X-Request-ID

# (request, seconds left before the client's deadline or None) -> response
ApiMethod = Callable[[Message, float | None], Message]


def seconds_left(context: grpc.ServicerContext) -> float | None:
    """The client's deadline in seconds from now, or None when it set none; for every gRPC service here."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_S else remaining


def _model_name(request: Message) -> str:
    """The model an RPC is about (for metrics and logs); MultiInference names it in its tasks."""
    if hasattr(request, "tasks"):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name if hasattr(request, "model_spec") else ""


def _version(response: Message) -> str:
    spec = getattr(response, "model_spec", None)
    if spec is None and getattr(response, "results", None):
        spec = response.results[0].model_spec
    return str(spec.version.value) if spec is not None and spec.HasField("version") else ""


class _Calls:
    """Runs one RPC through the API: status translation, metrics and the access log line."""

    def __init__(self, api: GrpcApi, metrics: Metrics | None):
        self.api = api
        self._metrics = metrics

    def run(self, api_name: str, method: ApiMethod, request: Message, context: grpc.ServicerContext) -> Message:
        started = time.monotonic()
        code, version = "OK", ""
        try:
            response = method(request, seconds_left(context))
            version = _version(response)
            return response
        except ServingError as exc:
            code = exc.code
            context.abort(grpc.StatusCode[exc.code], exc.message)
        except Exception:  # never a traceback to the client, never a dead server
            code = "INTERNAL"
            log.exception("Unhandled error in gRPC %s", api_name)
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE)
        finally:
            seconds = time.monotonic() - started
            model = _model_name(request)
            if self._metrics is not None and model:
                self._metrics.record_request(model, version, api_name, code, seconds, ENTRYPOINT_GRPC)
            request_id = dict(context.invocation_metadata() or ()).get(REQUEST_ID_METADATA, "-")
            log.info('%s "gRPC %s %s" %s %.1f ms request_id=%s', context.peer(), api_name, model or "-", code,
                     seconds * 1000, request_id)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, calls: _Calls):
        self._calls = calls

    def Predict(self, request, context):  # noqa: N802 (the proto's method names)
        return self._calls.run("Predict", self._calls.api.predict, request, context)

    def Classify(self, request, context):  # noqa: N802
        return self._calls.run("Classify", self._calls.api.classify, request, context)

    def Regress(self, request, context):  # noqa: N802
        return self._calls.run("Regress", self._calls.api.regress, request, context)

    def MultiInference(self, request, context):  # noqa: N802
        return self._calls.run("MultiInference", self._calls.api.multi_inference, request, context)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._calls.run("GetModelMetadata", self._calls.api.get_model_metadata, request, context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, calls: _Calls):
        self._calls = calls

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._calls.run("GetModelStatus", self._calls.api.get_model_status, request, context)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        return self._calls.run("HandleReloadConfigRequest", self._calls.api.handle_reload_config, request, context)


class GrpcServer:
    """Owns the gRPC server, its listening addresses and its handler threads."""

    def __init__(self, api: GrpcApi, addresses: list[str], max_threads: int,
                 channel_arguments: list[tuple[str, int | str]], metrics: Metrics | None,
                 services: Sequence[Callable[[grpc.Server], None]] = ()):
        """``services``: more services to register on the same server (the v2 protocol's)."""
        options = {**DEFAULT_OPTIONS, **dict(channel_arguments)}
        self._server = grpc.server(ThreadPoolExecutor(max_workers=max(max_threads, 1), thread_name_prefix="grpc"),
                                   options=list(options.items()))
        calls = _Calls(api, metrics)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(calls), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(calls), self._server)
        for add_service in services:
            add_service(self._server)
        self.ports: list[int] = []
        for address in addresses:
            try:
                port = self._server.add_insecure_port(address)
            except RuntimeError as exc:
                raise BindError(f"Failed to BuildAndStart gRPC server: cannot listen on {address}: {exc}",
                                "UNAVAILABLE") from exc
            self.ports.append(port)

    def start(self) -> None:
        """Start serving RPCs."""
        self._server.start()

    def stop(self, grace_s: float) -> threading.Event:
        """Refuse new RPCs at once; in-flight ones get ``grace_s``. The event is set when all are done."""
        return self._server.stop(grace_s)
