"""serving_contract.versions: which child folders of a base path are versions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serving_contract.versions import (is_version_name, latest_version, list_versions, next_version,
                                       version_dirs)


def make_version(base: Path, name: str, filename: str | None = "saved_model.pb") -> Path:
    (base / name).mkdir(parents=True)
    if filename:
        (base / name / filename).write_bytes(b"")
    return base / name


@pytest.mark.parametrize("name, expected", [
    ("1", True), ("007", True), ("10", True),
    ("²", False),    # str.isdigit() says yes, int() says no
    ("١٢", False),   # Arabic-Indic digits: int() would accept them, TF Serving would not
    ("-1", False), ("+1", False), (" 1", False), ("1.0", False), ("", False), (".export-3-x", False),
])
def test_version_names_are_ascii_digits_only(name, expected):
    assert is_version_name(name) is expected


def test_only_complete_version_directories_count(tmp_path):
    make_version(tmp_path, "1")
    make_version(tmp_path, "3", "saved_model.pbtxt")       # the text form counts too
    make_version(tmp_path, "4", filename=None)             # being copied: no saved_model.pb yet
    make_version(tmp_path, "²")                            # would crash int()
    make_version(tmp_path, ".export-5-abc")                # the exporter's hidden staging folder
    make_version(tmp_path, "tmp")
    (tmp_path / "6").write_text("a file, not a directory")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "saved_model.pb").mkdir()            # a directory named like the file is not it
    assert version_dirs(tmp_path) == {1: tmp_path / "1", 3: tmp_path / "3"}
    assert list_versions(tmp_path) == [1, 3]
    assert latest_version(tmp_path) == 3


def test_next_version_skips_every_version_named_directory(tmp_path):
    make_version(tmp_path, "1")
    make_version(tmp_path, "4", filename=None)  # incomplete, but its folder is taken
    make_version(tmp_path, "²")
    (tmp_path / "9").write_text("a file is not a version")
    assert next_version(tmp_path) == 5


def test_leading_zeros_name_the_same_version_once(tmp_path, caplog):
    make_version(tmp_path, "007")
    make_version(tmp_path, "7")
    make_version(tmp_path, "10")
    with caplog.at_level(logging.WARNING, logger="serving_contract.versions"):
        found = version_dirs(tmp_path)
    assert sorted(found) == [7, 10] and found[7].name in ("7", "007")
    assert "Duplicate version directories" in caplog.text
    assert list_versions(tmp_path) == [7, 10] and next_version(tmp_path) == 11


def test_missing_or_empty_base_path(tmp_path):
    missing = tmp_path / "missing"
    assert list_versions(missing) == [] and latest_version(missing) is None and next_version(missing) == 1
    assert list_versions(tmp_path) == [] and latest_version(tmp_path) is None and next_version(tmp_path) == 1
    # The model server's poller must see an unreadable base path as an error, not as "no versions".
    with pytest.raises(OSError):
        version_dirs(missing)
