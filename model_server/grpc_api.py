"""TF Serving's gRPC API as plain functions on its protos, free of the gRPC transport.

``GrpcApi`` is to ``grpc_server.py`` what ``RestApi`` is to ``RestServer``: each method takes the
request message of one RPC (``tensorflow_serving.apis``) and returns its response message, or
raises the ``ServingError`` with TF Serving's canonical code and message. It runs on the same
repository (one version manager) and the same ``submit`` (one batching queue, one thread pool)
as the REST API.

Differences from the real server, and why:

* Predict computes every output of the signature and drops the ones ``output_filter`` leaves
  out (TF Serving fetches only those); the answer is the same.
* MultiInference runs its tasks' signatures one after another on the same serialized examples
  (TF Serving fetches them in one ``Session::Run``); the results are the same.
* GetModelMetadata also answers the metadata field ``export_info`` (the export's
  ``assets.extra/export_info.json`` as JSON text in a ``google.protobuf.StringValue``), as the
  REST metadata carries ``metadata.export_info``; TF Serving rejects that field.
* Tensors are converted with ``tf.make_ndarray``; responses use the typed value fields
  (``float_val``...), or ``tensor_content`` with ``--enable_serialization_as_tensor_content``,
  as TF Serving does.

Messages are copied from ``servables/tensorflow/predict_util.cc``, ``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``util.cc``, ``get_model_metadata_impl.cc`` and
``model_servers/model_service_impl.cc``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import tensorflow as tf
from google.protobuf import json_format, wrappers_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_pb2, predict_pb2,
                                     regression_pb2)
from tensorflow_serving.apis import status_pb2

from model_server.config import ModelConfig, model_configs_from_proto
from model_server.example_codec import check_classify_outputs, check_regress_output, examples_of_input
from model_server.errors import FailedPrecondition, InvalidArgument, Unimplemented
from model_server.model_calls import SubmitFn, run_with_deadline
from model_server.repository import ModelRepository, ServableHandle
from model_server.servable import (CLASSIFY_CLASSES_KEY, CLASSIFY_METHOD, CLASSIFY_SCORES_KEY, DEFAULT_SIGNATURE,
                                   EXAMPLES_INPUT_KEY, REGRESS_METHOD, REGRESS_OUTPUTS_KEY)
from serving_contract.export import EXPORT_INFO_METADATA_KEY, SIGNATURE_DEF_METADATA_KEY

# TF Serving's one field, and our extension, as in the REST metadata: the export's export_info.json
# as JSON text in a StringValue.
METADATA_FIELDS = (SIGNATURE_DEF_METADATA_KEY, EXPORT_INFO_METADATA_KEY)
# ModelVersionStatus.State numbers by the state names the repository uses.
_STATE_NUMBERS = get_model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values_by_name
_ERROR_CODE_NUMBERS = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
# numpy dtype -> (DataType, typed value field) for the AsProtoField encoding.
_PROTO_FIELDS: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.uint32): (types_pb2.DT_UINT32, "uint32_val"),
    np.dtype(np.uint64): (types_pb2.DT_UINT64, "uint64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
}

# (new config, seconds to wait or None) -> None once every model is AVAILABLE; raises ServingError otherwise.
ReloadFn = Callable[[list[ModelConfig], float | None], None]


def tensor_to_proto(array: np.ndarray, as_content: bool = False) -> tensor_pb2.TensorProto:
    """A TensorProto like TF Serving's ``Tensor::AsProtoField`` (or ``AsProtoTensorContent``).

    Strings (``string_val``) and dtypes without a typed field here (half, complex) are left to
    ``tf.make_tensor_proto``.
    """
    array = np.asarray(array)
    typed = _PROTO_FIELDS.get(array.dtype)
    if typed is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=typed[0])
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape)
    if as_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    else:
        getattr(proto, typed[1]).extend(array.ravel().tolist())
    return proto


def proto_to_tensor(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy value of a request tensor; InvalidArgument("tensor parsing error: ALIAS") if it has none."""
    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # TypeError (bad dtype), ValueError (size vs shape), ...: all one error
        raise InvalidArgument(f"tensor parsing error: {alias}") from exc


def _set_model_spec(spec: model_pb2.ModelSpec, name: str, version: int, signature_name: str | None) -> None:
    """util.cc MakeModelSpec: name, version and (when given) the signature, empty -> serving_default."""
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name or DEFAULT_SIGNATURE


def _classification_result(outputs: dict[str, np.ndarray], num_examples: int,
                           result: classification_pb2.ClassificationResult) -> None:
    """classifier.cc PostProcessClassificationResult: one Classifications per example."""
    classes, scores = outputs.get(CLASSIFY_CLASSES_KEY), outputs.get(CLASSIFY_SCORES_KEY)
    # The REST encoder holds classifier.cc's shape, dtype and batch checks; run them once here too.
    check_classify_outputs(classes, scores, num_examples)
    width = (classes if classes is not None else scores).shape[1]
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(width):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = bytes(classes[row, column]).decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[row, column])


def _regression_result(outputs: dict[str, np.ndarray], num_examples: int,
                       result: regression_pb2.RegressionResult) -> None:
    """regressor.cc PostProcessRegressionResult: one Regression per example."""
    values = outputs[REGRESS_OUTPUTS_KEY]
    check_regress_output(values, num_examples)
    result.regressions.extend(regression_pb2.Regression(value=float(v)) for v in np.asarray(values).reshape(-1))


class GrpcApi:
    """PredictionService and ModelService over a model repository (no gRPC in here).

    ``timeout_s`` of each call is the client's remaining deadline (None: none was set).
    """

    def __init__(self, repository: ModelRepository, submit: SubmitFn, reload: ReloadFn,
                 tensor_content: bool = False):
        self._repository = repository
        self._submit = submit
        self._reload = reload
        self._tensor_content = tensor_content

    def _acquire(self, spec: model_pb2.ModelSpec) -> ServableHandle:
        """server_core.cc ServableRequestFromModelSpec: a version, a label, or the latest."""
        choice = spec.WhichOneof("version_choice")
        return self._repository.acquire(spec.name, spec.version.value if choice == "version" else None,
                                        spec.version_label if choice == "version_label" else None)

    # -- PredictionService ----------------------------------------------------------------------

    def predict(self, request: predict_pb2.PredictRequest, timeout_s: float | None) -> predict_pb2.PredictResponse:
        """predict_util.cc RunPredict."""
        _require_model_spec(request)
        response = predict_pb2.PredictResponse()
        with self._acquire(request.model_spec) as handle:
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            signature = handle.servable.signatures.get(signature_name)
            if signature is None:
                raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
            _set_model_spec(response.model_spec, handle.name, handle.version, signature_name)
            _check_inputs(request, signature.inputs)
            aliases = _output_aliases(request, signature.outputs)
            tensors = {alias: proto_to_tensor(alias, proto) for alias, proto in request.inputs.items()}
            outputs = run_with_deadline(self._submit, handle, signature_name, tensors, timeout_s)
        for alias in aliases:
            response.outputs[alias].CopyFrom(tensor_to_proto(outputs[alias], self._tensor_content))
        return response

    def classify(self, request: classification_pb2.ClassificationRequest,
                 timeout_s: float | None) -> classification_pb2.ClassificationResponse:
        """classifier.cc RunClassify."""
        response = classification_pb2.ClassificationResponse()
        outputs, count = self._run_examples(request, "classify", response.model_spec, timeout_s)
        _classification_result(outputs, count, response.result)
        return response

    def regress(self, request: regression_pb2.RegressionRequest,
                timeout_s: float | None) -> regression_pb2.RegressionResponse:
        """regressor.cc RunRegress."""
        response = regression_pb2.RegressionResponse()
        outputs, count = self._run_examples(request, "regress", response.model_spec, timeout_s)
        _regression_result(outputs, count, response.result)
        return response

    def _run_examples(self, request, verb: str, response_spec: model_pb2.ModelSpec,
                      timeout_s: float | None) -> tuple[dict[str, np.ndarray], int]:
        """Run a Classify or Regress request's examples through its signature: (outputs, example count)."""
        _require_model_spec(request)
        examples = examples_of_input(request.input)
        with self._acquire(request.model_spec) as handle:
            signature = handle.servable.example_signature(request.model_spec.signature_name, verb)
            _set_model_spec(response_spec, handle.name, handle.version, request.model_spec.signature_name)
            outputs = run_with_deadline(self._submit, handle, signature.name, {EXAMPLES_INPUT_KEY: examples},
                                        timeout_s)
        return outputs, len(examples)

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                        timeout_s: float | None) -> inference_pb2.MultiInferenceResponse:
        """multi_inference.cc TensorFlowMultiInferenceRunner::Infer, on the first task's model spec."""
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        response = inference_pb2.MultiInferenceResponse()
        with ExitStack() as stack:
            handle = stack.enter_context(self._acquire(spec))
            plan = _multi_inference_plan(request, handle)
            examples = examples_of_input(request.input)
            for task, signature_name in plan:
                outputs = run_with_deadline(self._submit, handle, signature_name, {EXAMPLES_INPUT_KEY: examples},
                                            timeout_s)
                result = response.results.add()
                if task.method_name == CLASSIFY_METHOD:
                    _classification_result(outputs, len(examples), result.classification_result)
                else:
                    _regression_result(outputs, len(examples), result.regression_result)
                _set_model_spec(result.model_spec, task.model_spec.name, handle.version,
                                task.model_spec.signature_name)
        return response

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                           timeout_s: float | None = None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """get_model_metadata_impl.cc: the SignatureDefMap packed in ``metadata["signature_def"]``."""
        _require_model_spec(request)
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field not in METADATA_FIELDS:
                raise InvalidArgument(f"Metadata field {field} is not supported")
        with self._acquire(request.model_spec) as handle:
            metadata = handle.servable.metadata()["metadata"]
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = handle.name
        response.model_spec.version.value = handle.version
        if SIGNATURE_DEF_METADATA_KEY in request.metadata_field:
            signature_defs = get_model_metadata_pb2.SignatureDefMap()
            json_format.ParseDict(metadata[SIGNATURE_DEF_METADATA_KEY], signature_defs)
            response.metadata[SIGNATURE_DEF_METADATA_KEY].Pack(signature_defs)
        if EXPORT_INFO_METADATA_KEY in request.metadata_field and EXPORT_INFO_METADATA_KEY in metadata:
            response.metadata[EXPORT_INFO_METADATA_KEY].Pack(
                wrappers_pb2.StringValue(value=json.dumps(metadata[EXPORT_INFO_METADATA_KEY])))
        return response

    # -- ModelService ---------------------------------------------------------------------------

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest,
                         timeout_s: float | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        """get_model_status_impl.cc: one version, or all of them; labels are not used to filter."""
        _require_model_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self._repository.version_status(spec.name, version):
            entry = response.model_version_status.add(version=int(status["version"]),
                                                      state=_STATE_NUMBERS[status["state"]].number)
            entry.status.error_code = _ERROR_CODE_NUMBERS[status["status"]["error_code"]].number
            entry.status.error_message = status["status"]["error_message"]
        return response

    def handle_reload_config(self, request: model_management_pb2.ReloadConfigRequest,
                             timeout_s: float | None = None) -> model_management_pb2.ReloadConfigResponse:
        """model_service_impl.cc HandleReloadConfigRequest: serve exactly the models of the new list."""
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                  "Only ModelConfigList is currently supported")
        self._reload(model_configs_from_proto(request.config), timeout_s)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto())


def _require_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")


def _check_inputs(request: predict_pb2.PredictRequest, signature_inputs: dict) -> None:
    """predict_util.cc VerifyRequestInputsSize, then every alias must be one of the signature's."""
    sent, wanted = set(request.inputs), set(signature_inputs)
    if len(sent) != len(wanted):
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) "
            f"!= len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
    unknown = sorted(sent - wanted)
    if unknown:
        raise InvalidArgument(f"input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in "
                              f"the set {{{','.join(sorted(wanted))}}}.")


def _output_aliases(request: predict_pb2.PredictRequest, signature_outputs: dict) -> list[str]:
    """predict_util.cc PreProcessPrediction's output_filter checks; no filter means every output."""
    aliases: list[str] = []
    for alias in request.output_filter:
        if alias not in signature_outputs:
            raise InvalidArgument(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                  f"the set {{{','.join(sorted(signature_outputs))}}}.")
        if alias in aliases:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        aliases.append(alias)
    return aliases or list(signature_outputs)


def _multi_inference_plan(request: inference_pb2.MultiInferenceRequest,
                          handle: ServableHandle) -> list[tuple[inference_pb2.InferenceTask, str]]:
    """multi_inference.cc's checks of the tasks, before anything runs: (task, signature name) pairs."""
    model_name = ""
    plan: list[tuple[inference_pb2.InferenceTask, str]] = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if model_name and task.model_spec.name != model_name:
            raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model_name = task.model_spec.name
        signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name in (name for _, name in plan):
            raise InvalidArgument(f"Duplicate evaluation of signature: {signature_name}")
        if signature_name not in handle.servable.signatures:
            raise InvalidArgument(f"Requested signature not found in model graph: {signature_name}")
        if task.method_name == CLASSIFY_METHOD:
            handle.servable.example_signature(signature_name, "classify")
        elif task.method_name == REGRESS_METHOD:
            handle.servable.example_signature(signature_name, "regress")
        else:
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
        plan.append((task, signature_name))
    return plan
