"""Names and files every export of ours carries (scripts/export_saved_model.py writes them).

Signatures (``[batch]`` everywhere, so TF Serving's row format works for each):

* ``serving_default``: input ``image`` float32 ``[batch, H, W, 3]``, already preprocessed;
  output ``probabilities`` float32 ``[batch, classes]``.
* ``serving_uint8``: input ``pixels_bytes`` string ``[batch]``, raw uint8 HWC bytes, scaled in the
  graph; output ``probabilities``.
* ``serving_bytes``: input ``pixels_bytes`` string ``[batch]``, raw float32 HWC bytes, preprocessed;
  output ``probabilities``.
* ``serving_topk``: inputs ``pixels_bytes`` as ``serving_uint8`` takes them and ``k`` int32
  ``[batch]`` (the graph uses max(k), clipped to 0..classes, for every row); outputs ``scores``
  float32 ``[batch, k]`` (best first, ties to the lower index), ``class_index`` int32
  ``[batch, k]``, ``class_id`` and ``class_label`` string ``[batch, k]``. It carries the class names
  in the graph, so a client of the real ``tensorflow_model_server`` (whose metadata has no
  export_info) gets labelled answers without a labels file.

``assets.extra/export_info.json`` (TF Serving's place for extra files beside a SavedModel) records
``model`` (the ``keras.applications`` name, or ``custom``), ``input_size`` ``[h, w]``,
``preprocessing`` (a ``serving_contract.preprocessing`` mode), ``labels`` (``[{"id", "label"}]`` in
output order, see ``serving_contract.labels``), ``classes``, the signatures, and ``weights``: where
the weights came from; ``untrained`` there means random weights, whose predictions are meaningless.
The class names are also the SavedModel asset ``assets/labels.txt``: one class a line in output
order, ``label`` where id and label are equal, else ``id<TAB>label`` (``serving_contract.labels``).
``assets.extra/tf_serving_warmup_requests`` holds one request per signature, replayed at load by
TF Serving and our model server (``model_server.warmup`` owns that format).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: TF Serving's default signature key (``signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY``).
SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SERVING_UINT8 = "serving_uint8"
SERVING_TOPK = "serving_topk"
#: The signatures taking one image input and answering ``probabilities`` (the gateway's choices).
PROBABILITIES_SIGNATURES = (SERVING_DEFAULT, SERVING_BYTES, SERVING_UINT8)
#: What the exporter writes; an export of ours missing one of them was made by an older exporter.
SIGNATURES = (*PROBABILITIES_SIGNATURES, SERVING_TOPK)
INPUT_IMAGE = "image"
INPUT_PIXELS_BYTES = "pixels_bytes"
INPUT_K = "k"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_SCORES = "scores"
OUTPUT_CLASS_INDEX = "class_index"
OUTPUT_CLASS_ID = "class_id"
OUTPUT_CLASS_LABEL = "class_label"
#: serving_topk's outputs, in the order a client reads them.
TOPK_OUTPUTS = (OUTPUT_SCORES, OUTPUT_CLASS_INDEX, OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL)

#: The model name the tutorial serves (``--model_name``), and the gateway's default backend model.
DEFAULT_MODEL_NAME = "ImageClassifier"

EXPORT_INFO_PATH = Path("assets.extra") / "export_info.json"
#: TF Serving's warm-up file (TFRecord of PredictionLog), replayed at load; model_server.warmup owns its format.
WARMUP_REQUESTS_PATH = Path("assets.extra") / "tf_serving_warmup_requests"
#: TF Serving's one model metadata field (``GetModelMetadataImpl::kSignatureDef``): the REST
#: metadata's ``metadata.signature_def.signature_def`` and the gRPC GetModelMetadata field.
SIGNATURE_DEF_METADATA_KEY = "signature_def"
#: Where our model server returns it: the REST metadata's ``metadata.export_info``, the gRPC
#: GetModelMetadata field of that name (a JSON string in a google.protobuf.StringValue), and the
#: v2 model metadata's ``export_info``.
EXPORT_INFO_METADATA_KEY = "export_info"
#: The class names as a SavedModel asset, in serving_contract.labels' text format.
LABELS_ASSET_PATH = Path("assets") / "labels.txt"
MODEL_KEY = "model"
#: ``export_info["model"]`` for anything that is not a known ``keras.applications`` classifier.
CUSTOM_MODEL = "custom"
INPUT_SIZE_KEY = "input_size"
PREPROCESSING_KEY = "preprocessing"
LABELS_KEY = "labels"
CLASSES_KEY = "classes"
WEIGHTS_KEY = "weights"
#: ``export_info["weights"]`` for random weights (``download_inceptionv3_model.py --weights none``).
UNTRAINED_WEIGHTS = "untrained"


def read_export_info(version_dir: str | Path) -> dict[str, Any] | None:
    """``<version_dir>/assets.extra/export_info.json`` as a dict, or None if absent or unreadable.

    An unreadable or non-object file is logged and treated as absent: export info only adds
    warnings and checks, so a model without it (someone else's SavedModel) still serves.
    """
    info_path = Path(version_dir) / EXPORT_INFO_PATH
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable %s: %s", info_path, exc)
        return None
    if not isinstance(info, dict):
        log.warning("Ignoring %s: expected a JSON object, got %s", info_path, type(info).__name__)
        return None
    return info


def write_export_info(version_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``info`` as ``<version_dir>/assets.extra/export_info.json`` (indented JSON); return its path."""
    info_path = Path(version_dir) / EXPORT_INFO_PATH
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info_path


def is_untrained(info: Any) -> bool:
    """Whether export info (a dict, or None when there is none) says the weights are untrained."""
    return isinstance(info, dict) and info.get(WEIGHTS_KEY) == UNTRAINED_WEIGHTS
