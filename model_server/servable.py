"""One loaded SavedModel version: its signatures, metadata, warm-up and the TensorFlow call.

SignatureDefs (method names, tensor names, dtypes, shapes) come from ``saved_model.pb`` itself so
the metadata API prints exactly what the real server prints; the callable functions come from
``tf.saved_model.load``. This module is the single boundary where TensorFlow exceptions become
``ServingError``s (see ``translate_tf_errors``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_server import errors
from model_server.errors import FailedPrecondition, InvalidArgument, ServingError
from model_server.tensor_types import TensorSpec
from serving_contract.export import EXPORT_INFO_METADATA_KEY, SERVING_DEFAULT, is_untrained, read_export_info
from serving_contract.versions import SAVED_MODEL_FILENAMES

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = SERVING_DEFAULT
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
EXAMPLES_INPUT_KEY = "inputs"          # classify and regress signatures take serialized Examples here
CLASSIFY_CLASSES_KEY = "classes"
CLASSIFY_SCORES_KEY = "scores"
REGRESS_OUTPUTS_KEY = "outputs"
# Canonical status code numbers (tf.errors.OpError.error_code) by name.
_CANONICAL_CODES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
                    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
                    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


def _error_classes() -> dict[str, type[ServingError]]:
    return {cls.code: cls for cls in vars(errors).values()
            if isinstance(cls, type) and issubclass(cls, ServingError) and cls is not ServingError}


@contextlib.contextmanager
def translate_tf_errors() -> Iterator[None]:
    """Re-raise TensorFlow's status errors as the ServingError with the same canonical code.

    Anything else propagates unchanged (it is a bug, and the HTTP layer answers 500 for it).
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as exc:
        code = _CANONICAL_CODES.get(exc.error_code, "UNKNOWN")
        raise _error_classes().get(code, errors.Unknown)(exc.message) from exc


@dataclass(frozen=True)
class Signature:
    """A SignatureDef reduced to what serving needs."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def _tensor_spec(tensor_info) -> TensorSpec:
    from tensorflow.core.framework import types_pb2

    shape_proto = tensor_info.tensor_shape
    if shape_proto.unknown_rank:
        shape = None
    else:
        shape = tuple(None if dim.size < 0 else int(dim.size) for dim in shape_proto.dim)
    return TensorSpec(types_pb2.DataType.Name(tensor_info.dtype), shape)


def read_meta_graph(path: Path, tags: set[str]):
    """The MetaGraphDef of ``path`` whose tag set equals ``tags`` (from .pb or .pbtxt)."""
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary, text = (path / name for name in SAVED_MODEL_FILENAMES)
    if binary.is_file():
        try:
            saved_model.ParseFromString(binary.read_bytes())
        except message.DecodeError:
            raise errors.DataLoss(f"Can't parse {binary} as binary proto") from None
    elif text.is_file():
        try:
            text_format.Parse(text.read_text(), saved_model)
        except text_format.ParseError as exc:
            raise errors.DataLoss(f"Can't parse {text} as text proto: {exc}") from None
    else:
        raise errors.NotFound(f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise errors.NotFound(f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. "
                          f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
                          f"`saved_model_cli`. Available tag-sets: {available}")


def _check_shape(signature: str, key: str, spec: TensorSpec, array: np.ndarray) -> None:
    # A concrete function rejects a mismatching shape with a long Python TypeError; say it plainly.
    if spec.shape is None:
        return
    expected = spec.shape
    if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        shown = "[" + ",".join("-1" if d is None else str(d) for d in expected) + "]"
        raise InvalidArgument(f"Input '{key}' of signature '{signature}' must have shape {shown} "
                              f"(-1: any size), got [{','.join(str(d) for d in array.shape)}]")


class Servable:
    """A loaded, callable SavedModel version."""

    def __init__(self, name: str, version: int, path: Path, loaded: Any, meta_graph,
                 export_info: dict | None):
        self.name = name
        self.version = version
        self.path = path
        self.export_info = export_info
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self._signature_defs = meta_graph.signature_def
        self.signatures = {
            key: Signature(key, sig.method_name, {k: _tensor_spec(v) for k, v in sig.inputs.items()},
                           {k: _tensor_spec(v) for k, v in sig.outputs.items()})
            for key, sig in meta_graph.signature_def.items() if key in self._functions}

    # -- signature lookup, with the REST API's messages ---------------------------------------

    def predict_signature(self, name: str | None) -> Signature:
        """The signature a predict request names (default ``serving_default``)."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise InvalidArgument(f'Serving signature name: "{key}" not found in signature def')
        return self.signatures[key]

    def example_signature(self, name: str | None, verb: str) -> Signature:
        """The classify/regress signature a request names, checked like TF Serving's PreProcess*."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise InvalidArgument(f"No signature was found with the name: {key}")
        signature = self.signatures[key]
        kind = "classification" if verb == "classify" else "regression"
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        if verb == "classify" and len(signature.outputs) not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        if verb == "regress" and len(signature.outputs) != 1:
            raise InvalidArgument("Expected one output Tensor.")
        if EXAMPLES_INPUT_KEY not in signature.inputs:
            raise InvalidArgument(f"No {kind} inputs found in SignatureDef: {self._debug_string(key)}")
        wanted = {CLASSIFY_CLASSES_KEY, CLASSIFY_SCORES_KEY} if verb == "classify" else {REGRESS_OUTPUTS_KEY}
        if not wanted & set(signature.outputs):
            if verb == "classify":
                raise InvalidArgument('Expected classification signature outputs to contain at least one of '
                                      f'"classes" or "scores". Signature was: {self._debug_string(key)}')
            raise InvalidArgument(f"No regression outputs found in SignatureDef: {self._debug_string(key)}")
        return signature

    def _debug_string(self, key: str) -> str:
        from google.protobuf import text_format

        return text_format.MessageToString(self._signature_defs[key])

    # -- calls -------------------------------------------------------------------------------

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature on numpy inputs; TF errors come out as ServingError."""
        import tensorflow as tf

        spec = self.signatures[signature]
        for key, array in inputs.items():
            if key in spec.inputs:
                _check_shape(signature, key, spec.inputs[key], array)
        function = self._functions[signature]
        with translate_tf_errors():
            try:
                outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
            except (TypeError, ValueError) as exc:
                # Raised by argument binding (names, dtypes, shapes), before any op runs.
                raise InvalidArgument(f"Invalid input for signature '{signature}': {exc}") from exc
            return {key: value.numpy() for key, value in outputs.items()}

    def metadata(self) -> dict:
        """GetModelMetadataResponse as the REST API prints it, plus our ``export_info`` extension."""
        from google.protobuf import json_format

        signature_def = {key: json_format.MessageToDict(self._signature_defs[key],
                                                        always_print_fields_with_no_presence=True,
                                                        preserving_proto_field_name=True)
                         for key in sorted(self._signature_defs)}
        metadata: dict[str, Any] = {"signature_def": {"signature_def": signature_def}}
        if self.export_info is not None:
            metadata[EXPORT_INFO_METADATA_KEY] = self.export_info
        return {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
                "metadata": metadata}

    def warm_up(self) -> None:
        """Call each predict signature once on zeros / empty strings so the first request is fast.

        Synthetic inputs may be invalid for a model (e.g. bytes it must decode); such failures are
        expected and only logged.
        """
        for key, signature in self.signatures.items():
            if signature.method_name != PREDICT_METHOD:
                continue
            inputs = {name: _zeros_like_spec(spec) for name, spec in signature.inputs.items()}
            started = time.monotonic()
            try:
                self.run(key, inputs)
                log.info("Warm-up of %s version %d signature %s took %.0f ms", self.name, self.version, key,
                         (time.monotonic() - started) * 1000)
            except (ServingError, NotImplementedError) as exc:
                log.info("Warm-up of %s version %d signature %s skipped: %s", self.name, self.version, key,
                         str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def close(self) -> None:
        """Drop the TensorFlow objects so their memory can be reclaimed."""
        self._functions = {}
        self._loaded = None


def _zeros_like_spec(spec: TensorSpec) -> np.ndarray:
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    shape = (1,) if spec.shape is None else tuple(1 if d is None else d for d in spec.shape)
    if spec.dtype == "DT_STRING":
        return np.full(shape, b"", dtype=object)
    dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype)).as_numpy_dtype
    return np.zeros(shape, dtype=dtype)


def load_servable(name: str, version: int, path: Path, tags: tuple[str, ...] = ("serve",),
                  warm_up: bool = True) -> Servable:
    """Load, inspect and (optionally) warm up one version; failures raise ServingError."""
    import tensorflow as tf

    started = time.monotonic()
    meta_graph = read_meta_graph(path, set(tags))
    with translate_tf_errors():
        try:
            loaded = tf.saved_model.load(str(path), tags=list(tags))
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"Failed to load SavedModel at {path}: {exc}") from exc
    export_info = read_export_info(path)
    servable = Servable(name, version, path, loaded, meta_graph, export_info)
    if is_untrained(export_info):
        log.warning("\n%s\n!! Model %s version %d has UNTRAINED weights: its predictions are meaningless.\n%s",
                    "!" * 78, name, version, "!" * 78)
    if warm_up:
        servable.warm_up()
    log.info("Loaded %s version %d from %s in %.2f s (signatures: %s)", name, version, path,
             time.monotonic() - started, ", ".join(sorted(servable.signatures)))
    return servable
