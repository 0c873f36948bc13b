"""TF Serving's model warm-up: replay ``assets.extra/tf_serving_warmup_requests`` before serving.

The file is a TFRecord of ``tensorflow.serving.PredictionLog`` protos (``predict_log``,
``classify_log``, ``regress_log`` or ``multi_inference_log``), as TF Serving documents in
``saved_model_warmup.md``. At load (``--enable_model_warmup``, on by default), every record's
request is run once on the new version, before the version is reported AVAILABLE, so the lazy
work of a first call (graph pruning and optimisation, kernel set-up, memory pools) is not paid
by a client. As in ``saved_model_warmup_util.cc``: no file is fine (nothing to do); more than
1000 records, an unparsable record, a file that is not a TFRecord, or a request that fails makes
the load fail with that error (and it is retried like any failed load).

This module owns the file format: ``read_warmup_requests`` turns the file into
``WarmupRequest``s (verb, signature name, input tensors) that ``servable.load_servable`` runs;
``write_warmup_requests`` and ``predict_log`` build such a file; the exporter writes one request
per signature it exports, so the real ``tensorflow_model_server`` warms up the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_server.errors import DataLoss, InvalidArgument, Unimplemented
from model_server.example_codec import examples_of_input
from model_server.routing import VERB_CLASSIFY, VERB_PREDICT, VERB_REGRESS
from serving_contract.export import WARMUP_REQUESTS_PATH

log = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords
_VERB_BY_METHOD = {"tensorflow/serving/classify": "classify", "tensorflow/serving/regress": "regress"}


@dataclass(frozen=True)
class WarmupRequest:
    """One request to replay: ``inputs`` by alias (predict), or serialized ``examples`` (classify, regress)."""

    verb: str
    signature_name: str
    inputs: dict[str, np.ndarray] | None = None
    examples: np.ndarray | None = None


def _records(path: Path) -> Iterator[bytes]:
    """The raw records of a TFRecord file; DataLoss (TF's message) when it is not one."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.DataLossError as exc:
        raise DataLoss(f"{exc.message}. Please verify your warmup data is in TFRecord format.") from exc


def requests_of(prediction_log: Any) -> list[WarmupRequest]:
    """The request(s) one PredictionLog holds (a multi-inference log holds one per task)."""
    import tensorflow as tf

    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        request = prediction_log.predict_log.request
        try:
            inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"Invalid warmup tensor: {exc}") from exc
        return [WarmupRequest(VERB_PREDICT, request.model_spec.signature_name, inputs=inputs)]
    if kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        verb = VERB_CLASSIFY if kind == "classify_log" else VERB_REGRESS
        return [WarmupRequest(verb, request.model_spec.signature_name, examples=examples_of_input(request.input))]
    if kind == "multi_inference_log":
        request = prediction_log.multi_inference_log.request
        examples = examples_of_input(request.input)
        requests = []
        for task in request.tasks:
            verb = _VERB_BY_METHOD.get(task.method_name)
            if verb is None:
                raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
            requests.append(WarmupRequest(verb, task.model_spec.signature_name, examples=examples))
        return requests
    if kind is not None:  # session_run_log, predict_streamed_log
        field_number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise Unimplemented(f"Unsupported log_type for warmup: {field_number}")
    return []


def read_warmup_requests(version_dir: str | Path) -> Iterator[list[WarmupRequest]]:
    """The requests of each record of the version's warm-up file (nothing if it has none).

    Raises InvalidArgument for an unparsable record or more than 1000 records, DataLoss for a
    file that is not a TFRecord, with TF Serving's messages.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_REQUESTS_PATH
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return
    count = 0
    for record in _records(path):
        prediction_log = prediction_log_pb2.PredictionLog()
        try:
            prediction_log.ParseFromString(record)
        except Exception as exc:  # protobuf's DecodeError; its own message says little
            raise InvalidArgument(f"Failed to parse warmup record: {record[:64]!r} from {path}") from exc
        yield requests_of(prediction_log)
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise InvalidArgument(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")


def predict_log(signature_name: str, inputs: dict[str, np.ndarray], model_name: str = "") -> Any:
    """A PredictionLog holding one PredictRequest for ``signature_name`` with ``inputs``."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    prediction_log = prediction_log_pb2.PredictionLog()
    request = prediction_log.predict_log.request
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log


def write_warmup_requests(version_dir: str | Path, logs: Iterable[Any]) -> Path:
    """Write ``logs`` (PredictionLog protos) as ``version_dir/assets.extra/tf_serving_warmup_requests``."""
    import tensorflow as tf

    path = Path(version_dir) / WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for prediction_log in logs:
            writer.write(prediction_log.SerializeToString())
    return path
