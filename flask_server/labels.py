"""Class labels for classifier outputs, and top-k selection. No network, no TensorFlow.

The ImageNet list and the labels text format are the export contract's
(``serving_contract.labels``, re-exported here). Custom label files (``load_labels(path)``), one
class per line in index order, blank lines ignored:

* ``label``            -> id = label = the whole line (spaces allowed)
* ``id<TAB>label``     -> text before the first tab is the id, the rest the label
* a ``.json`` file     -> a list of ``"label"`` strings or ``["id", "label"]`` pairs
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving_contract.labels import IMAGENET, Label, LabelsError, imagenet_labels, read_labels_file

__all__ = ["IMAGENET", "Label", "LabelsError", "imagenet_labels", "load_labels", "top_k"]


def load_labels(source: str) -> list[Label]:
    """(id, label) pairs in class-index order, from ``"imagenet"`` or a labels file (see module doc)."""
    if source == IMAGENET:
        return list(imagenet_labels())
    return _read_labels_file(Path(source))


def top_k(probs: np.ndarray, labels: list[Label] | tuple[Label, ...], k: int = 5) -> list[tuple[str, str, float]]:
    """The ``k`` highest scores as (id, label, score), best first.

    Ties go to the lower class index. (Keras' ``decode_predictions`` uses ``argsort()[-k:][::-1]``
    with NumPy's default, unstable sort, so its tie order is unspecified; on distinct scores the
    results are the same.)
    """
    probs = np.asarray(probs).reshape(-1)
    if probs.shape[0] != len(labels):
        raise ValueError(f"model returned {probs.shape[0]} scores but there are {len(labels)} labels")
    k = max(0, min(int(k), probs.shape[0]))
    # Stable sort of the negated scores: descending, equal scores keep ascending index order.
    order = np.argsort(-probs, kind="stable")[:k]
    return [(*labels[i], float(probs[i])) for i in order]


def _read_labels_file(path: Path) -> list[Label]:
    if path.suffix.lower() != ".json":
        return read_labels_file(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read labels file {path}: {exc}") from exc
    except ValueError as exc:
        raise LabelsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise LabelsError(f"{path}: expected a JSON list of labels or [id, label] pairs")
    labels = []
    for n, item in enumerate(items):
        if isinstance(item, str):
            labels.append((item, item))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item):
            labels.append((item[0], item[1]))
        else:
            raise LabelsError(f"{path}: item {n} is neither a string nor an [id, label] pair: {item!r}")
    if not labels:
        raise LabelsError(f"{path} contains no labels")
    return labels
