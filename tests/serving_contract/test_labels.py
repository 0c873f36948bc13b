"""serving_contract.labels: the labels text format, the labels in export_info, ImageNet's list."""

from __future__ import annotations

import pytest

from serving_contract.export import LABELS_KEY
from serving_contract.labels import (IMAGENET_CLASSES, LabelsError, format_labels_text, imagenet_labels,
                                     labels_from_info, labels_to_info, parse_labels_text, read_labels_file)


@pytest.mark.parametrize("text, expected", [
    ("cat\ndog\n", [("cat", "cat"), ("dog", "dog")]),
    ("  tabby cat  \r\n\n\ndog", [("tabby cat", "tabby cat"), ("dog", "dog")]),  # whitespace, CRLF, blank lines
    ("n01\ttench\nn02\t goldfish\n", [("n01", "tench"), ("n02", "goldfish")]),
    ("a\tb\tc\n", [("a", "b\tc")]),  # only the first tab separates
    ("\n \n", []),
])
def test_parse_labels_text(text, expected):
    assert parse_labels_text(text) == expected


@pytest.mark.parametrize("labels", [
    [("cat", "cat"), ("blood orange", "blood orange")],
    [("n01440764", "tench"), ("x", "x"), ("id 2", "label two")],
    list(imagenet_labels()),
])
def test_format_then_parse_round_trips(labels):
    assert parse_labels_text(format_labels_text(labels)) == labels


@pytest.mark.parametrize("labels", [[("", "")], [("a\tb", "a")], [("a", "two\nlines")], [(" a", " a")]])
def test_format_refuses_what_one_line_cannot_hold(labels):
    with pytest.raises(LabelsError, match="label 0"):
        format_labels_text(labels)


def test_read_labels_file(tmp_path):
    (tmp_path / "labels.txt").write_text("apple\ncherry\n")
    assert read_labels_file(tmp_path / "labels.txt") == [("apple", "apple"), ("cherry", "cherry")]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LabelsError, match="contains no labels"):
        read_labels_file(tmp_path / "empty.txt")
    with pytest.raises(LabelsError, match="cannot read"):
        read_labels_file(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabelsError, match="cannot read"):
        read_labels_file(tmp_path / "latin1.txt")


def test_labels_in_export_info_round_trip():
    labels = [("n01440764", "tench"), ("cat", "cat")]
    info = {LABELS_KEY: labels_to_info(labels)}
    assert info[LABELS_KEY] == [{"id": "n01440764", "label": "tench"}, {"id": "cat", "label": "cat"}]
    assert labels_from_info(info) == labels


@pytest.mark.parametrize("info", [None, {}, {"weights": "imagenet"}, ["labels"]])
def test_export_info_without_labels_gives_none(info):
    assert labels_from_info(info) is None


@pytest.mark.parametrize("entries, message", [
    ("cat\ndog", "must be a list"),
    ([{"id": "cat"}], "item 0"),
    ([{"id": "cat", "label": "cat"}, ["dog", "dog"]], "item 1"),
    ([{"id": 1, "label": "one"}], "item 0"),
])
def test_malformed_labels_in_export_info(entries, message):
    with pytest.raises(LabelsError, match=message):
        labels_from_info({LABELS_KEY: entries})


def test_imagenet_labels_are_keras_order():
    labels = imagenet_labels()
    assert len(labels) == IMAGENET_CLASSES
    # Keras' imagenet_class_index.json, entries 0, 281 and 999
    assert labels[0] == ("n01440764", "tench")
    assert labels[281] == ("n02123045", "tabby")
    assert labels[999] == ("n15075141", "toilet_tissue")
