"""serving_contract.export: export_info read/write and the untrained check."""

from __future__ import annotations

import json
import logging

import pytest

from serving_contract.export import (EXPORT_INFO_PATH, UNTRAINED_WEIGHTS, is_untrained, read_export_info,
                                     write_export_info)


def test_write_then_read_round_trips(tmp_path):
    info = {"weights": "imagenet", "input_size": [299, 299], "signatures": {"serving_uint8": {}}}
    path = write_export_info(tmp_path / "1", info)
    assert path == tmp_path / "1" / "assets.extra" / "export_info.json"
    assert json.loads(path.read_text()) == info  # plain JSON any tool can read
    assert read_export_info(tmp_path / "1") == info


def test_absent_info_is_none(tmp_path):
    assert read_export_info(tmp_path) is None
    assert read_export_info(tmp_path / "missing") is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"untrained"', "\udcff"])
def test_unreadable_or_non_object_info_is_none_and_logged(tmp_path, caplog, text):
    info_path = tmp_path / EXPORT_INFO_PATH
    info_path.parent.mkdir()
    info_path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="serving_contract.export"):
        assert read_export_info(tmp_path) is None
    assert str(info_path) in caplog.text


@pytest.mark.parametrize("info, expected", [
    ({"weights": UNTRAINED_WEIGHTS}, True),
    ({"weights": "imagenet"}, False),
    ({"weights": "UNTRAINED"}, False),
    ({}, False),
    (None, False),
    (["weights", "untrained"], False),
])
def test_is_untrained(info, expected):
    assert is_untrained(info) is expected


def test_untrained_marker_written_and_read_back(tmp_path):
    write_export_info(tmp_path, {"weights": UNTRAINED_WEIGHTS})
    assert is_untrained(read_export_info(tmp_path))
