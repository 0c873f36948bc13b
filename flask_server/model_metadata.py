"""What one served version's metadata tells the gateway about calling it, and the settings that follow.

The model server's ``GET /v1/models/NAME/versions/V/metadata`` answers TF Serving's
``GetModelMetadataResponse`` (the version's SignatureDefs) and, from our model server, the export's
``assets.extra/export_info.json`` as ``metadata.export_info``. ``VersionMetadata.from_reply`` reads
both; ``version_settings`` turns a route's ``ModelSpec`` and that metadata into the spec and labels
this version is called with (``VersionSettings``).

What is learned, unless the route's MODELS_CONFIG table states the key (``ModelSpec.explicit``):

* ``signature``: ``serving_topk`` when the version has it (the class names come back as tensors,
  so this works with the real ``tensorflow_model_server`` too), else ``serving_uint8``, else
  ``serving_bytes``, else ``serving_default``; with none of them, the spec's (``serving_uint8``).
* ``input_size``: export_info's ``input_size``, else the ``[-1, H, W, 3]`` shape of
  ``serving_default``'s ``image`` input (all the real server shows).
* ``preprocessing``: export_info's (it matters only for the float formats; ``serving_uint8`` and
  ``serving_topk`` scale in the graph).
* ``labels``: export_info's ``labels``; else the route's labels (ImageNet by default). With
  ``serving_topk`` and no export_info the model server names the classes itself.

Pure: no I/O, no Flask; the caching is ``VersionTracker``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask_server.model_config import ModelSpec, signature_defaults
from serving_contract.export import (EXPORT_INFO_METADATA_KEY, INPUT_IMAGE, INPUT_K, INPUT_PIXELS_BYTES, INPUT_SIZE_KEY,
                                     OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL, OUTPUT_PROBABILITIES, OUTPUT_SCORES,
                                     PREPROCESSING_KEY, PROBABILITIES_SIGNATURES, SERVING_BYTES, SERVING_DEFAULT,
                                     SERVING_TOPK, SERVING_UINT8, SIGNATURE_DEF_METADATA_KEY)
from serving_contract.labels import Label, LabelsError, labels_from_info
from serving_contract.preprocessing import MODES

#: The signatures the gateway can call without configuration, best first, with the input each must have.
PREFERRED_SIGNATURES = ((SERVING_TOPK, INPUT_PIXELS_BYTES), (SERVING_UINT8, INPUT_PIXELS_BYTES),
                        (SERVING_BYTES, INPUT_PIXELS_BYTES), (SERVING_DEFAULT, INPUT_IMAGE))
# TF Serving's metadata nesting: metadata.signature_def.signature_def.<name>.inputs.<alias>.tensor_shape.dim[].size
UNKNOWN_DIM = -1

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Signature:
    """One SignatureDef as the gateway needs it: input and output aliases -> shapes (-1: any size;
    None: unknown rank)."""

    inputs: dict[str, Shape | None]
    outputs: dict[str, Shape | None]


@dataclasses.dataclass(frozen=True)
class VersionMetadata:
    """A version's signatures and export_info ({} from servers without it, e.g. tensorflow_model_server)."""

    signatures: dict[str, Signature] = dataclasses.field(default_factory=dict)
    export_info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_reply(cls, reply: Any) -> VersionMetadata:
        """Read a metadata reply; parts that are missing or malformed are left out, never an error."""
        metadata = reply.get("metadata") if isinstance(reply, dict) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        info = metadata.get(EXPORT_INFO_METADATA_KEY)
        defs = metadata.get(SIGNATURE_DEF_METADATA_KEY)
        defs = defs.get(SIGNATURE_DEF_METADATA_KEY) if isinstance(defs, dict) else None
        defs = defs if isinstance(defs, dict) else {}
        # "__saved_model_init_op" and the like are the SavedModel's own, not callable signatures.
        signatures = {name: _signature(definition) for name, definition in defs.items()
                      if isinstance(definition, dict) and not name.startswith("__")}
        return cls(signatures, info if isinstance(info, dict) else {})

    def input_size(self) -> tuple[int, int] | None:
        """(height, width) from export_info, else from ``serving_default``'s ``image`` input shape."""
        size = self.export_info.get(INPUT_SIZE_KEY)
        if isinstance(size, list) and len(size) == 2 and all(_positive_int(d) for d in size):
            return size[0], size[1]
        default = self.signatures.get(SERVING_DEFAULT)
        shape = default.inputs.get(INPUT_IMAGE) if default else None
        if shape and len(shape) == 4 and _positive_int(shape[1]) and _positive_int(shape[2]):
            return shape[1], shape[2]
        return None

    def preprocessing(self) -> str | None:
        """export_info's preprocessing mode, when it names a known one."""
        mode = self.export_info.get(PREPROCESSING_KEY)
        return mode if mode in MODES else None

    def labels(self) -> list[Label] | None:
        """export_info's labels, or None when it has none (or they are malformed: then the
        route's labels are used, and a class count that does not match them is reported at predict)."""
        try:
            return labels_from_info(self.export_info)
        except LabelsError:
            return None

    def classes(self) -> int | None:
        """How many classes the model scores: its labels, else the ``probabilities`` output's width."""
        labels = self.labels()
        if labels is not None:
            return len(labels)
        for name in PROBABILITIES_SIGNATURES:
            signature = self.signatures.get(name)
            shape = signature.outputs.get(OUTPUT_PROBABILITIES) if signature else None
            if shape and len(shape) == 2 and _positive_int(shape[1]):
                return shape[1]
        return None

    def preferred_signature(self) -> str | None:
        """The best signature of ``PREFERRED_SIGNATURES`` this version has, or None."""
        for name, input_name in PREFERRED_SIGNATURES:
            signature = self.signatures.get(name)
            if signature is not None and input_name in signature.inputs and _usable(name, signature):
                return name
        return None


@dataclasses.dataclass(frozen=True)
class VersionSettings:
    """How the gateway calls one version: the resolved spec, the labels it ranks with (None when
    ``serving_topk`` names the classes and the route states no labels) and the class count (None:
    unknown, so only the model server bounds ``top_k``)."""

    spec: ModelSpec
    labels: list[Label] | None
    classes: int | None

    @property
    def top_k_signature(self) -> bool:
        """Whether the model server ranks and names the classes (``serving_topk``)."""
        return self.spec.signature == SERVING_TOPK


def version_settings(spec: ModelSpec, route_labels: list[Label], metadata: VersionMetadata) -> VersionSettings:
    """The spec and labels for a version: what the metadata says, except the keys the route states."""
    learned: dict[str, Any] = {}
    explicit = spec.explicit
    if "signature" not in explicit:
        signature = metadata.preferred_signature()
        if signature is not None:
            learned["signature"] = signature
            input_format, input_name = signature_defaults(signature)
            if "input_format" not in explicit:
                learned["input_format"] = input_format
            if "input_name" not in explicit:
                learned["input_name"] = input_name
    if "input_size" not in explicit and metadata.input_size() is not None:
        learned["input_size"] = metadata.input_size()
    if "preprocessing" not in explicit and metadata.preprocessing() is not None:
        learned["preprocessing"] = metadata.preprocessing()
    resolved = dataclasses.replace(spec, **learned) if learned else spec
    if "labels" in explicit:
        labels: list[Label] | None = route_labels
    elif resolved.signature == SERVING_TOPK:
        labels = None  # the model server names the classes (the export's own labels)
    else:
        labels = metadata.labels() or route_labels
    classes = len(labels) if labels is not None else metadata.classes()
    return VersionSettings(resolved, labels, classes)


def _signature(definition: dict[str, Any]) -> Signature:
    return Signature(_tensors(definition.get("inputs")), _tensors(definition.get("outputs")))


def _tensors(tensors: Any) -> dict[str, Shape | None]:
    if not isinstance(tensors, dict):
        return {}
    return {alias: _shape(info) for alias, info in tensors.items() if isinstance(info, dict)}


def _shape(tensor_info: dict[str, Any]) -> Shape | None:
    """TensorShapeProto as JSON (sizes are int64, so JSON strings) -> a tuple, or None if unknown."""
    shape = tensor_info.get("tensor_shape")
    if not isinstance(shape, dict) or shape.get("unknown_rank"):
        return None
    try:
        return tuple(int(dim.get("size", UNKNOWN_DIM)) for dim in shape.get("dim") or [])
    except (AttributeError, TypeError, ValueError):
        return None


def _usable(name: str, signature: Signature) -> bool:
    """serving_topk must also take ``k`` and answer the names and scores the gateway reads."""
    if name != SERVING_TOPK:
        return True
    return INPUT_K in signature.inputs and all(
        output in signature.outputs for output in (OUTPUT_SCORES, OUTPUT_CLASS_ID, OUTPUT_CLASS_LABEL))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
