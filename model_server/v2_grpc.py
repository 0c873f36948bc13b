"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) over ``V2DataPlane``.

The protos are the published ones in ``tritonclient`` (``tritonclient.grpc.service_pb2``: the
KServe v2 ``grpc_service.proto`` that Triton serves, with its ``inference`` package name), so any
v2 gRPC client works. Implemented: ``ServerLive``, ``ServerReady``, ``ModelReady``,
``ServerMetadata``, ``ModelMetadata``, ``ModelInfer``; the others (model repository, shared
memory, statistics, streaming) answer UNIMPLEMENTED.

Tensor data as in Triton: inputs in ``raw_input_contents`` (one entry per input, the binary tensor
data layout) or in typed ``contents``; outputs always in ``raw_output_contents``. A ServingError
becomes the gRPC status with the same canonical code; the client's deadline bounds the model call.

Register it on a ``grpc.server`` with ``add_to_server(server, dataplane)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_server import v2_codec
from model_server.errors import InvalidArgument, NotFound, ServingError
from model_server.grpc_server import INTERNAL_ERROR_MESSAGE, seconds_left
from model_server.routing import parse_version
from model_server.v2_api import InferResult, V2DataPlane

log = logging.getLogger(__name__)

# v2 datatype -> the InferTensorContents field holding its values (FP16 travels only as raw bytes).
CONTENTS_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                   "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                   "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                   "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parameter_value(parameter: Any) -> object:
    """An ``InferParameter`` as the Python value it holds (bool, int, str or float)."""
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def version_of(text: str) -> int | None:
    """A request's ``model_version``: "" is the server's choice (latest), else a non-negative integer."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit():
        raise InvalidArgument(f"Model version must be a non-negative integer, got '{text}'")
    return parse_version(text)


def infer_request_from_proto(request: Any) -> v2_codec.InferRequest:
    """A ``ModelInferRequest`` as the codec's InferRequest; InvalidArgument naming what is wrong."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs, datatypes = {}, {}
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        v2_codec.check_tensor_header(name, datatype, shape)
        if name in inputs:
            raise InvalidArgument(f"Input '{name}' is given more than once")
        if raw:
            array = v2_codec.tensor_from_binary(name, datatype, shape, raw[index])
        elif datatype in CONTENTS_FIELDS:
            array = v2_codec.tensor_from_values(name, datatype, shape,
                                                list(getattr(tensor.contents, CONTENTS_FIELDS[datatype])))
        else:
            raise InvalidArgument(f"Input '{name}' is {datatype}: send it in raw_input_contents")
        inputs[name], datatypes[name] = array, datatype
    outputs = None
    if request.outputs:
        outputs = []
        for wanted in request.outputs:
            k = parameter_value(wanted.parameters[v2_codec.CLASSIFICATION_PARAMETER]) \
                if v2_codec.CLASSIFICATION_PARAMETER in wanted.parameters else 0
            if not isinstance(k, int) or isinstance(k, bool) or k < 0:
                raise InvalidArgument(f"'{v2_codec.CLASSIFICATION_PARAMETER}' of output '{wanted.name}' must be a "
                                      f"non-negative integer")
            outputs.append(v2_codec.RequestedOutput(wanted.name, True, k))
    parameters = {key: parameter_value(value) for key, value in request.parameters.items()}
    signature = parameters.get(v2_codec.SIGNATURE_NAME_PARAMETER)
    if signature is not None and not isinstance(signature, str):
        raise InvalidArgument(f"Parameter '{v2_codec.SIGNATURE_NAME_PARAMETER}' must be a string")
    return v2_codec.InferRequest(inputs, datatypes, request.id or None, parameters, outputs)


def infer_response_to_proto(model_name: str, request: v2_codec.InferRequest, result: InferResult) -> Any:
    """The ``ModelInferResponse``: requested outputs (or all, by name) in ``raw_output_contents``."""
    response = service_pb2.ModelInferResponse(model_name=model_name, model_version=str(result.version),
                                              id=request.id or "")
    for wanted, array in v2_codec.selected_outputs(request, result.outputs, result.labels):
        response.outputs.add(name=wanted.name, datatype=v2_codec.datatype_of_array(array), shape=list(array.shape))
        response.raw_output_contents.append(v2_codec.tensor_to_binary(array))
    return response


class V2GrpcService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` on a data plane; unimplemented RPCs keep the base class's answer."""

    def __init__(self, dataplane: V2DataPlane):
        self._dataplane = dataplane

    def ServerLive(self, request, context):  # noqa: N802 (the proto's method names)
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return _call(context, lambda: service_pb2.ServerReadyResponse(ready=self._dataplane.server_ready()))

    def ModelReady(self, request, context):  # noqa: N802
        def ready() -> Any:
            try:
                return service_pb2.ModelReadyResponse(
                    ready=self._dataplane.model_ready(request.name, version_of(request.version)))
            except NotFound:  # a model that is not served is simply not ready (no status to say more)
                return service_pb2.ModelReadyResponse(ready=False)
        return _call(context, ready)

    def ServerMetadata(self, request, context):  # noqa: N802
        return _call(context, lambda: service_pb2.ServerMetadataResponse(**self._dataplane.server_metadata()))

    def ModelMetadata(self, request, context):  # noqa: N802
        def metadata() -> Any:
            _, body = self._dataplane.model_metadata(request.name, version_of(request.version))
            response = service_pb2.ModelMetadataResponse(name=body["name"], versions=body["versions"],
                                                         platform=body["platform"])
            for field in ("inputs", "outputs"):
                for tensor in body[field]:
                    getattr(response, field).add(**tensor)
            return response
        return _call(context, metadata)

    def ModelInfer(self, request, context):  # noqa: N802
        def infer() -> Any:
            parsed = infer_request_from_proto(request)
            result = self._dataplane.infer(request.model_name, version_of(request.model_version), parsed,
                                           seconds_left(context))
            return infer_response_to_proto(request.model_name, parsed, result)
        return _call(context, infer)


def _call(context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a ServingError as its gRPC status and anything else as INTERNAL (logged)."""
    try:
        return fn()
    except ServingError as exc:
        context.abort(grpc.StatusCode[exc.code], exc.message)
    except Exception:  # never a traceback to the client, never a dead server
        log.exception("Unhandled error in a v2 gRPC call")
        context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE)


def add_to_server(server: grpc.Server, dataplane: V2DataPlane) -> None:
    """Serve ``inference.GRPCInferenceService`` on ``server`` (beside TF Serving's services)."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(V2GrpcService(dataplane), server)
