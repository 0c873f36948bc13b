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
from flask_server.errors import BadRequest
from flask_server.model_config import ModelSpec
from flask_server.served_model import ServedModel
from flask_server.transport import EncodedBatch, ModelServerTransport
from tests.gateway.conftest import closed_port_url, image_bytes

SIZE = (4, 4)
LABELS = [(f"n{i:08d}", f"class_{i}") for i in range(5)]
VERSION = 3


class InMemoryTransport:
    """A ModelServerTransport that keeps what it is sent and answers fixed scores per image."""

    base_url = "memory://"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores
        self.batches: list[np.ndarray] = []
        self.calls: list[tuple[str, int, str | None]] = []

    def model_status(self, name: str, request_id: str | None = None) -> list[dict[str, Any]]:
        return [{"version": str(VERSION - 1), "state": "END"}, {"version": str(VERSION), "state": "AVAILABLE"}]

    def model_metadata(self, name: str, version: int | None = None, label: str | None = None,
                       request_id: str | None = None) -> dict[str, Any]:
        return {"model_spec": {"name": name, "version": str(VERSION)}, "metadata": {}}

    def encode(self, spec: ModelSpec, batch: np.ndarray) -> EncodedBatch:
        self.batches.append(batch.copy())
        return EncodedBatch(batch.tobytes(), batch.shape[0])

    def predict(self, spec: ModelSpec, encoded: EncodedBatch, version: int,
                request_id: str | None = None) -> np.ndarray:
        self.calls.append((spec.model_name, version, request_id))
        return self.scores[:encoded.size]

    def close(self) -> None:
        pass


def served(scores: np.ndarray, **spec: Any) -> tuple[ServedModel, InMemoryTransport]:
    transport = InMemoryTransport(np.asarray(scores, np.float32))
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
