"""flask_server.labels: Keras' ImageNet order and short labels, custom label files, top-k."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flask_server.labels import LabelsError, imagenet_labels, load_labels, top_k

# From Keras' imagenet_class_index.json (what decode_predictions prints).
KERAS_IMAGENET = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    134: ("n02012849", "crane"),
    207: ("n02099601", "golden_retriever"),
    281: ("n02123045", "tabby"),
    282: ("n02123159", "tiger_cat"),
    285: ("n02124075", "Egyptian_cat"),
    409: ("n02708093", "analog_clock"),
    504: ("n03063599", "coffee_mug"),
    517: ("n03126707", "crane"),
    812: ("n04266014", "space_shuttle"),
    817: ("n04285008", "sports_car"),
    954: ("n07753592", "banana"),
    999: ("n15075141", "toilet_tissue"),
}


def test_imagenet_labels_match_keras():
    labels = load_labels("imagenet")
    assert len(labels) == 1000
    assert len({wnid for wnid, _ in labels}) == 1000
    for index, expected in KERAS_IMAGENET.items():
        assert labels[index] == expected, index
    assert all(" " not in label for _, label in labels)


def test_imagenet_labels_are_cached_and_callers_get_a_copy():
    assert imagenet_labels() is imagenet_labels()
    mine = load_labels("imagenet")
    mine[0] = ("x", "y")
    assert load_labels("imagenet")[0] == KERAS_IMAGENET[0]


def test_label_files(tmp_path):
    plain = tmp_path / "labels.txt"
    plain.write_text("cat\nsports car\n\n")
    assert load_labels(str(plain)) == [("cat", "cat"), ("sports car", "sports car")]
    tabbed = tmp_path / "ids.txt"
    tabbed.write_text("n1\tcat\nn2\tsports car\n")
    assert load_labels(str(tabbed)) == [("n1", "cat"), ("n2", "sports car")]
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps(["cat", ["n2", "dog"]]))
    assert load_labels(str(as_json)) == [("cat", "cat"), ("n2", "dog")]


@pytest.mark.parametrize("content, name", [("", "empty.txt"), ("{}", "dict.json"), ("[1]", "int.json"),
                                           ("not json", "bad.json")])
def test_bad_label_files(tmp_path, content, name):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LabelsError):
        load_labels(str(path))


def test_missing_label_file(tmp_path):
    with pytest.raises(LabelsError, match="cannot read"):
        load_labels(str(tmp_path / "nope.txt"))


def test_top_k_order_and_ties():
    labels = [(f"id{i}", f"label{i}") for i in range(6)]
    probs = np.array([0.1, 0.3, 0.05, 0.3, 0.25, 0.0], dtype=np.float32)
    result = top_k(probs, labels, 4)
    assert [r[0] for r in result] == ["id1", "id3", "id4", "id0"]  # tie 1/3: lower index first
    assert all(isinstance(r[2], float) for r in result)
    assert result[0][2] == pytest.approx(0.3)
    assert len(top_k(probs, labels, 10)) == 6
    assert top_k(probs[None, :], labels, 1)[0][0] == "id1"  # a (1, classes) batch row is fine


def test_top_k_matches_keras_order_on_distinct_scores():
    labels = load_labels("imagenet")
    probs = np.random.default_rng(0).dirichlet(np.ones(1000)).astype(np.float32)
    keras_indices = probs.argsort()[-5:][::-1]  # what decode_predictions does
    assert [r[:2] for r in top_k(probs, labels, 5)] == [labels[i] for i in keras_indices]


def test_top_k_rejects_wrong_class_count():
    with pytest.raises(ValueError, match="3 scores but there are 2 labels"):
        top_k(np.zeros(3), [("a", "a"), ("b", "b")], 1)
