"""One loaded SavedModel version, run the way TensorFlow Serving runs it: a Session per version.

``load_servable`` loads the MetaGraph tagged ``serve`` (``--saved_model_tags``) into its own
``tf.compat.v1.Session`` with ``tf.compat.v1.saved_model.loader.load``, as TF Serving's
SavedModelBundle does, so TF1 exports (``simple_save``, ``SavedModelBuilder``) and TF2 exports
(``tf.saved_model.save``, Keras' ``model.export``) load alike. ``Servable.run`` feeds the request's
tensors to the SignatureDef's input tensor names and fetches its output tensor names, through one
cached Session callable per (signature, inputs) pair. Like TF Serving's ``Session::Run``, shapes are
not checked against the SignatureDef: TensorFlow decides, and what it rejects becomes the
ServingError with TensorFlow's code and message (INVALID_ARGUMENT -> 400). One exception keeps a
bad request from killing the process: with oneDNN on (TensorFlow's default on x86), an input
declared with rank >= 4 must not be fed a lower rank to a graph with convolutions or pooling
(``_refuse_low_rank_images``).

SignatureDefs (method names, tensor names, dtypes, shapes) are read from ``saved_model.pb`` itself
so the metadata API prints exactly what the real server prints. This module is the single boundary
where TensorFlow exceptions become ``ServingError``s (see ``translate_tf_errors``). Warm-up (the
``assets.extra/tf_serving_warmup_requests`` replay) lives in ``model_server.warmup``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_server import errors, warmup
from model_server.errors import FailedPrecondition, InvalidArgument
from model_server.routing import VERB_PREDICT
from model_server.tensor_types import TensorSpec
from serving_contract.export import (EXPORT_INFO_METADATA_KEY, SERVING_DEFAULT, SIGNATURE_DEF_METADATA_KEY,
                                     is_untrained, read_export_info)
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
# A TF2 export's init op is stored as a SignatureDef; it is run at load, never served.
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
#: TensorFlow's switch for its oneDNN kernels (on by default on x86 Linux).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Canonical status code numbers (tf.errors.OpError.error_code) by name.
_CANONICAL_CODES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
                    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
                    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
                    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


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
        raise errors.error_for_code(code, exc.message) from exc


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


class Servable:
    """A loaded, callable SavedModel version: one Session over its ``serve`` MetaGraph."""

    def __init__(self, name: str, version: int, path: Path, session: Any, meta_graph,
                 export_info: dict | None):
        self.name = name
        self.version = version
        self.path = path
        self.export_info = export_info
        self._session = session
        self._signature_defs = meta_graph.signature_def
        self._callables: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._callables_lock = threading.Lock()
        self.signatures = {
            key: Signature(key, sig.method_name, {k: _tensor_spec(v) for k, v in sig.inputs.items()},
                           {k: _tensor_spec(v) for k, v in sig.outputs.items()})
            for key, sig in meta_graph.signature_def.items() if key != INIT_OP_SIGNATURE_KEY}
        self._guard_low_rank = _onednn_enabled() and _has_data_format_ops(meta_graph.graph_def)

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
        """Run one signature: feed ``inputs`` by the SignatureDef's tensor names, fetch every output.

        Shapes are not checked here (TensorFlow decides, as in TF Serving); dtypes must match the
        graph's. Raises InvalidArgument for an unknown signature or input alias, and TensorFlow's
        own errors as the ServingError with the same canonical code.
        """
        signature_def = self._signature_defs.get(signature)
        if signature_def is None or signature == INIT_OP_SIGNATURE_KEY:
            raise InvalidArgument(f'Serving signature name: "{signature}" not found in signature def')
        for alias in inputs:
            if alias not in signature_def.inputs:
                raise InvalidArgument(f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                                      f"in the set {{{','.join(sorted(signature_def.inputs))}}}.")
        if self._guard_low_rank:
            _refuse_low_rank_images(self.signatures[signature], inputs)
        feed_aliases = tuple(sorted(inputs))
        call, output_aliases = self._callable(signature, signature_def, feed_aliases)
        with translate_tf_errors():
            try:
                values = call(*(inputs[alias] for alias in feed_aliases))
            except (TypeError, ValueError) as exc:
                # numpy -> tensor conversion, before anything runs (e.g. a non-bytes string element).
                raise InvalidArgument(f"Invalid input for signature '{signature}': {exc}") from exc
        return {alias: np.asarray(value) for alias, value in zip(output_aliases, values)}

    def _callable(self, signature: str, signature_def, feed_aliases: tuple[str, ...]) -> tuple[Any, list[str]]:
        """The Session callable feeding ``feed_aliases`` and fetching every output (built once)."""
        key = (signature, feed_aliases)
        with self._callables_lock:
            cached = self._callables.get(key)
            if cached is not None:
                return cached
            if self._session is None:
                raise errors.Unavailable(f"Servable {self.name} version {self.version} is unloaded")
            from tensorflow.core.protobuf import config_pb2

            output_aliases = sorted(signature_def.outputs)
            options = config_pb2.CallableOptions(
                feed=[signature_def.inputs[alias].name for alias in feed_aliases],
                fetch=[signature_def.outputs[alias].name for alias in output_aliases])
            with translate_tf_errors():
                # A Session callable is TF's C++ MakeCallable/RunCallable: Session::Run without the
                # Python client's feed-shape check, and without re-pruning the graph on every call.
                call = self._session._make_callable_from_options(options)  # noqa: SLF001 (public in C++)
            self._callables[key] = (call, output_aliases)
            return self._callables[key]

    def metadata(self) -> dict:
        """GetModelMetadataResponse as the REST API prints it, plus our ``export_info`` extension."""
        from google.protobuf import json_format

        signature_def = {key: json_format.MessageToDict(self._signature_defs[key],
                                                        always_print_fields_with_no_presence=True,
                                                        preserving_proto_field_name=True)
                         for key in sorted(self._signature_defs)}
        metadata: dict[str, Any] = {SIGNATURE_DEF_METADATA_KEY: {SIGNATURE_DEF_METADATA_KEY: signature_def}}
        if self.export_info is not None:
            metadata[EXPORT_INFO_METADATA_KEY] = self.export_info
        return {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
                "metadata": metadata}

    def close(self) -> None:
        """Release the callables and close the Session so its memory can be reclaimed."""
        with self._callables_lock:
            self._callables.clear()
            session, self._session = self._session, None
        if session is not None:
            session.close()


def _onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (``TF_ENABLE_ONEDNN_OPTS``)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _has_data_format_ops(graph_def) -> bool:
    """Whether the graph or its functions hold ops that index dimensions by a ``data_format``
    (convolutions, pooling): oneDNN's kernels for them abort on inputs of a lower rank."""
    from tensorflow.python.framework import op_def_registry

    ops = {node.op for node in graph_def.node}
    ops.update(node.op for function in graph_def.library.function for node in function.node_def)
    # By the op's definition: a SavedModel strips attrs left at their default (NHWC) from its nodes.
    op_defs = (op_def_registry.get(op) for op in ops)
    return any(any(attr.name == "data_format" for attr in op_def.attr) for op_def in op_defs if op_def is not None)


def _refuse_low_rank_images(signature: Signature, inputs: dict[str, np.ndarray]) -> None:
    """The one shape check: an input declared with rank >= 4 (images) fed with a lower rank.

    With oneDNN on, TensorFlow's convolution and pooling kernels hit a CHECK failure on such a
    tensor and abort the whole process (tensor_format.h, "Invalid index from the dimension"),
    where its standard kernels answer INVALID_ARGUMENT ("convolution input must be 4-dimensional").
    Any other shape is left to TensorFlow, as in TF Serving.
    """
    for alias, array in inputs.items():
        declared = signature.inputs[alias].shape
        if declared is not None and len(declared) >= 4 and np.ndim(array) < len(declared):
            shown = ",".join("-1" if d is None else str(d) for d in declared)
            raise InvalidArgument(f"input '{alias}' must be {len(declared)}-dimensional like the signature's "
                                  f"[{shown}], got [{','.join(str(d) for d in np.shape(array))}]")


def run_warmup(servable: Servable) -> int:
    """Replay the version's ``tf_serving_warmup_requests`` (model_server.warmup); returns the count.

    Each request goes through the same signature checks and Session callables as a client's, so
    the callables a client will use are built and run once. The first failure is raised.
    """
    started = time.monotonic()
    replayed = 0
    for requests in warmup.read_warmup_requests(servable.path):
        for request in requests:
            if request.verb == VERB_PREDICT:
                signature = servable.predict_signature(request.signature_name)
                servable.run(signature.name, request.inputs or {})
            else:
                signature = servable.example_signature(request.signature_name, request.verb)
                servable.run(signature.name, {EXAMPLES_INPUT_KEY: request.examples})
        replayed += 1
    if replayed:
        log.info("Warm-up of %s version %d: replayed %d record(s) in %.0f ms", servable.name, servable.version,
                 replayed, (time.monotonic() - started) * 1000)
    return replayed


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0):
    """The ConfigProto each version's Session gets (``--tensorflow_*_parallelism``; 0 = TF's default)."""
    from tensorflow.core.protobuf import config_pb2

    return config_pb2.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                  inter_op_parallelism_threads=inter_op_threads)


def load_servable(name: str, version: int, path: Path, tags: tuple[str, ...] = ("serve",),
                  warm_up: bool = True, config: Any = None) -> Servable:
    """Load one version into its own Session, then (``warm_up``) replay its warm-up requests.

    ``config`` is the Session's ConfigProto (``session_config``). Failures raise ServingError:
    TF Serving's messages for a missing SavedModel or tag set, TensorFlow's for the rest, and
    a failed warm-up fails the load, as in TF Serving.
    """
    import tensorflow as tf

    started = time.monotonic()
    read_meta_graph(path, set(tags))  # TF Serving's messages for a missing .pb or tag set
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default(), translate_tf_errors():
            try:
                meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), str(path))
            except (OSError, RuntimeError, ValueError) as exc:
                raise FailedPrecondition(f"Failed to load SavedModel at {path}: {exc}") from exc
        graph.finalize()  # nothing may add ops to a served graph (it would also leak per request)
        export_info = read_export_info(path)
        servable = Servable(name, version, path, session, meta_graph, export_info)
    except BaseException:
        session.close()
        raise
    if is_untrained(export_info):
        log.warning("\n%s\n!! Model %s version %d has UNTRAINED weights: its predictions are meaningless.\n%s",
                    "!" * 78, name, version, "!" * 78)
    if warm_up:
        try:
            run_warmup(servable)
        except BaseException:
            servable.close()
            raise
    log.info("Loaded %s version %d from %s in %.2f s (signatures: %s)", name, version, path,
             time.monotonic() - started, ", ".join(sorted(servable.signatures)))
    return servable
