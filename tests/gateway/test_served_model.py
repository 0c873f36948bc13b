"""ServedModel.classify, the one prediction pipeline, over an in-memory transport: what it sends,
what it answers, and which errors it raises before the model server is called.

The transport here stands in for the network (like httpx's MockTransport), not for our model
server: the REST transport and the real model server are tested in test_backend.py and
test_predict.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flask_server.backend import ModelServerClient
from flask_server.errors import BadModelServerReply, BadRequest
from flask_server.model_config import ModelSpec
from flask_server.served_model import ServedModel
from flask_server.transport import EncodedBatch, ModelServerTransport, TopK
from serving_contract.labels import labels_from_info, labels_to_info
from tests.gateway.conftest import closed_port_url, image_bytes

SIZE = (4, 4)
LABELS = [(f"n{i:08d}", f"class_{i}") for i in range(5)]
VERSION = 3


class InMemoryTransport:
    """A ModelServerTransport that keeps what it is sent and answers fixed scores per image, and
    per version the metadata a test gives (none by default)."""

    base_url = "memory://"

    def __init__(self, scores: np.ndarray, metadata: dict[int, dict[str, Any]] | None = None) -> None:
        self.scores = scores
        self.version = VERSION
        self.metadata = metadata or {}
        self.batches: list[np.ndarray] = []
        self.ks: list[int | None] = []
        self.calls: list[tuple[str, int, str | None]] = []

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        return [{"version": str(self.version - 1), "state": "END"},
                {"version": str(self.version), "state": "AVAILABLE"}]

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        version = self.version if version is None else version
        return {"model_spec": {"name": name, "version": str(version)}, "metadata": self.metadata.get(version, {})}

    def encode(self, spec: ModelSpec, batch: np.ndarray, k: int | None = None) -> EncodedBatch:
        self.batches.append(batch.copy())
        self.ks.append(k)
        return EncodedBatch(batch.tobytes(), batch.shape[0])

    def predict(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                request_id: str | None = None) -> np.ndarray:
        self.calls.append((spec.model_name, version, request_id))
        return self.scores[:encoded.size]

    def predict_top_k(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                      request_id: str | None = None) -> TopK:
        """What serving_topk computes in the graph, with the class names the export carries."""
        self.calls.append((spec.signature, version, request_id))
        names = labels_from_info(self.metadata[version]["export_info"])
        scores = self.scores[:encoded.size]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :self.ks[-1]]
        return TopK(np.take_along_axis(scores, order, 1), order, [[names[i][0] for i in row] for row in order],
                    [[names[i][1] for i in row] for row in order])

    def close(self) -> None:
        pass


def served(scores: np.ndarray, metadata: dict[int, dict[str, Any]] | None = None,
           **spec: Any) -> tuple[ServedModel, InMemoryTransport]:
    transport = InMemoryTransport(np.asarray(scores, np.float32), metadata)
    model_spec = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=SIZE, **spec)
    return ServedModel(model_spec, LABELS, transport), transport


def test_both_transports_implement_the_interface():
    assert isinstance(ModelServerClient(closed_port_url()), ModelServerTransport)
    assert isinstance(InMemoryTransport(np.zeros((1, 5))), ModelServerTransport)


def test_classify_decodes_predicts_and_ranks():
    scores = np.float32([[0.1, 0.4, 0.2, 0.25, 0.05], [0.3, 0.1, 0.1, 0.1, 0.4]])
    model, transport = served(scores)
    prediction = model.classify([image_bytes(seed=1), image_bytes(seed=2)], 2, request_id="rid-7")
    # uint8 pixels of the configured size go to the transport (serving_uint8 scales in the graph)
    [batch] = transport.batches
    assert batch.shape == (2, *SIZE, 3) and batch.dtype == np.uint8
    assert transport.calls == [("m", VERSION, "rid-7")]
    assert prediction.version == VERSION and prediction.warning is None
    np.testing.assert_array_equal(prediction.probabilities, scores)
    expected = [[LABELS[i] for i in np.argsort(-row, kind="stable")[:2]] for row in scores]
    assert [[(r["wnid"], r["label"]) for r in rows] for rows in prediction.top_k] == expected
    assert prediction.top_k[0][0]["score"] == pytest.approx(0.4)


def test_float_formats_get_scaled_pixels():
    model, transport = served(np.ones((1, 5)) / 5, signature="serving_default", input_name="image",
                              input_format="json")
    model.classify([image_bytes()], 1)
    assert transport.batches[0].dtype == np.float32 and transport.batches[0].min() >= -1


def test_default_k_is_the_routes_top_k_capped_at_the_classes():
    model, _ = served(np.ones((1, 5)) / 5, top_k=50)
    assert len(model.classify([image_bytes()]).top_k[0]) == len(LABELS)


@pytest.mark.parametrize("k", [0, len(LABELS) + 1])
def test_bad_k_is_refused_before_any_call(k):
    model, transport = served(np.ones((1, 5)) / 5)
    with pytest.raises(BadRequest, match=f"top_k must be between 1 and {len(LABELS)} for model 'm', got {k}"):
        model.classify([image_bytes()], k)
    assert transport.batches == [] and transport.calls == []


def test_an_image_that_cannot_be_decoded_is_named_in_a_batch():
    model, transport = served(np.ones((2, 5)) / 5)
    with pytest.raises(BadRequest, match=r"^instances\[1\]: not a supported image"):
        model.classify([image_bytes(), b"not an image"], 1)
    with pytest.raises(BadRequest, match="^not a supported image"):
        model.classify([b"not an image"], 1)
    assert transport.calls == []


def signature_def(*names: str, size: tuple[int, int] = (6, 6), classes: int = 3) -> dict[str, Any]:
    """``metadata.signature_def`` as TF Serving prints it, for our exporter's signatures ``names``."""
    def tensor(*dims: int) -> dict[str, Any]:
        return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                      "unknown_rank": False}, "name": "x:0"}
    pixels = {"pixels_bytes": tensor(-1)}
    defs = {"serving_default": {"inputs": {"image": tensor(-1, *size, 3)},
                                "outputs": {"probabilities": tensor(-1, classes)}},
            "serving_uint8": {"inputs": pixels, "outputs": {"probabilities": tensor(-1, classes)}},
            "serving_bytes": {"inputs": pixels, "outputs": {"probabilities": tensor(-1, classes)}},
            "serving_topk": {"inputs": {**pixels, "k": tensor(-1)},
                             "outputs": {name: tensor(-1, -1) for name in ("scores", "class_index", "class_id",
                                                                           "class_label")}},
            "__saved_model_init_op": {"inputs": {}, "outputs": {}}}
    # The real server prints the Any's type beside the map.
    return {"signature_def": {"signature_def": {name: defs[name] for name in (*names, "__saved_model_init_op")},
                              "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap"}}


THREE = [("c0", "cat"), ("c1", "dog"), ("c2", "owl")]


def export(size: tuple[int, int], labels: list[tuple[str, str]], *signatures: str) -> dict[str, Any]:
    """A version's metadata as our model server answers it: signature defs plus export_info."""
    return {**signature_def(*signatures, size=size, classes=len(labels)),
            "export_info": {"input_size": list(size), "preprocessing": "tf", "labels": labels_to_info(labels)}}


def test_a_version_brings_its_input_size_and_labels():
    scores = np.float32([[0.2, 0.5, 0.3]])
    model, transport = served(scores, {VERSION: export((6, 6), THREE, "serving_uint8", "serving_default")})
    prediction = model.classify([image_bytes()], 3)
    assert transport.batches[0].shape == (1, 6, 6, 3)
    assert [(r["wnid"], r["label"]) for r in prediction.top_k[0]] == [THREE[1], THREE[2], THREE[0]]
    # top_k is bounded by this version's classes, not by the route's labels (5 of them)
    with pytest.raises(BadRequest, match="top_k must be between 1 and 3"):
        model.classify([image_bytes()], 4)
    assert model.status()["classes"] == 3


def test_serving_topk_is_preferred_and_ranks_on_the_model_server():
    scores = np.float32([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    model, transport = served(scores, {VERSION: export((6, 6), THREE, "serving_uint8", "serving_topk")})
    prediction = model.classify([image_bytes(seed=1), image_bytes(seed=2)], 2)
    assert transport.calls == [("serving_topk", VERSION, None)] and transport.ks == [2]
    assert prediction.probabilities is None
    assert [[r["label"] for r in rows] for rows in prediction.top_k] == [["dog", "owl"], ["cat", "owl"]]
    assert prediction.top_k[1][0]["score"] == pytest.approx(0.6)


def test_what_the_route_states_wins_over_the_metadata():
    scores = np.float32([[0.2, 0.5, 0.3]])
    model, transport = served(scores, {VERSION: export((6, 6), THREE, "serving_uint8", "serving_topk")},
                              signature="serving_uint8", explicit=frozenset({"signature"}))
    prediction = model.classify([image_bytes()], 1)
    # the stated signature is called; the size and the class names still come from the export
    assert transport.calls == [("m", VERSION, None)] and transport.batches[0].shape == (1, 6, 6, 3)
    assert prediction.top_k[0][0]["label"] == "dog"


def test_a_stated_input_size_the_export_contradicts_is_a_502_naming_the_key():
    model, transport = served(np.float32([[0.2, 0.5, 0.3]]), {VERSION: export((6, 6), THREE, "serving_uint8")},
                              explicit=frozenset({"input_size"}))
    with pytest.raises(BadModelServerReply, match=r"takes 6x6 images .* configured for 4x4 \(models\.m\.input_size"):
        model.classify([image_bytes()], 1)
    assert transport.calls == []


def test_stated_labels_rename_serving_topk_classes_by_index():
    mine = [("x", "first"), ("y", "second"), ("z", "third")]
    model, _ = served(np.float32([[0.2, 0.5, 0.3]]), {VERSION: export((6, 6), THREE, "serving_topk")},
                      explicit=frozenset({"labels"}))
    model.labels = mine
    best = model.classify([image_bytes()], 1).top_k[0][0]
    assert best == {"wnid": "y", "label": "second", "score": pytest.approx(0.5)}


def test_a_new_version_with_other_classes_is_served_from_that_version_on():
    four = [*THREE, ("c3", "eel")]
    model, transport = served(np.float32([[0.1, 0.2, 0.3, 0.4]]),
                              {VERSION: export((6, 6), THREE, "serving_uint8"),
                               VERSION + 1: export((8, 8), four, "serving_uint8")})
    transport.scores = np.float32([[0.1, 0.2, 0.7]])
    assert model.classify([image_bytes()], 1).top_k[0][0]["label"] == "owl"
    transport.version, transport.scores = VERSION + 1, np.float32([[0.1, 0.2, 0.3, 0.4]])
    model.versions.current(refresh=True)
    prediction = model.classify([image_bytes()], 4)
    assert prediction.version == VERSION + 1 and prediction.top_k[0][0]["label"] == "eel"
    assert transport.batches[-1].shape == (1, 8, 8, 3)


def test_a_version_whose_scores_do_not_match_its_labels_is_a_502():
    model, _ = served(np.float32([[0.5, 0.5]]), {VERSION: export((6, 6), THREE, "serving_uint8")})
    with pytest.raises(BadModelServerReply, match=r"returned scores of shape \[1, 2\] .* 3 labels"):
        model.classify([image_bytes()], 1)
