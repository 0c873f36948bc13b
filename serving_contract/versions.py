"""Which child folders of a model's base path are versions, as TF Serving's file-system source decides.

A version is a directory whose name is ASCII digits (``str.isdigit`` alone would accept ``²``,
which ``int()`` refuses) and that holds ``saved_model.pb`` or ``saved_model.pbtxt``. Anything else
is skipped: hidden ``.export-*`` staging folders, files, and numeric folders still being copied.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")


def is_version_name(name: str) -> bool:
    """Whether ``name`` is a version folder name: ASCII digits only (``7``, ``007``; not ``²``, ``-1``)."""
    return name.isascii() and name.isdigit()


def holds_saved_model(path: Path) -> bool:
    """Whether ``path`` holds a SavedModel file (binary or text)."""
    return any((path / name).is_file() for name in SAVED_MODEL_FILENAMES)


def version_dirs(base_path: str | Path) -> dict[int, Path]:
    """Complete version directories under ``base_path`` by version number. Raises OSError if unreadable.

    ``7`` and ``007`` are the same version: the real server warns and loads one of them, and so do we.
    """
    found: dict[int, Path] = {}
    for child in sorted(Path(base_path).iterdir()):
        if not (is_version_name(child.name) and child.is_dir() and holds_saved_model(child)):
            continue
        version = int(child.name)
        if version in found:
            log.warning("Duplicate version directories detected. Version %d will be loaded from %s, %s "
                        "will be ignored.", version, child, found[version])
        found[version] = child
    return found


def list_versions(base_path: str | Path) -> list[int]:
    """Complete versions under ``base_path``, ascending; [] when ``base_path`` is not a directory."""
    base_path = Path(base_path)
    return sorted(version_dirs(base_path)) if base_path.is_dir() else []


def latest_version(base_path: str | Path) -> int | None:
    """The highest complete version under ``base_path``, or None if there is none."""
    versions = list_versions(base_path)
    return versions[-1] if versions else None


def next_version(base_path: str | Path) -> int:
    """The version number a new export takes: one more than any version-named directory, or 1.

    Incomplete ones count too (a version still being copied is not free to be written over).
    """
    base_path = Path(base_path)
    if not base_path.is_dir():
        return 1
    taken = [int(p.name) for p in base_path.iterdir() if is_version_name(p.name) and p.is_dir()]
    return max(taken, default=0) + 1
