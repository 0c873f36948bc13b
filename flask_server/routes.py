"""The gateway's views: ``api`` (everything that touches a model; authenticated and rate limited by
security.py) and ``health`` (liveness and readiness probes; never authenticated).

Each prediction view is thin: parse the body -> preprocess (in this request thread) ->
``ServedModel.predict`` on the model server -> top-k -> JSON. Errors are raised and rendered by
errors.py as ``{"error", "request_id"}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request

from flask_server.errors import BadRequest
from flask_server.models import AVAILABLE, DEFAULT_ROUTE, Prediction, ServedModel, get_model, get_registry
from flask_server.preprocess import ImageDecodeError
from flask_server.request_id import get_request_id
from flask_server.request_parsing import images_from_request, parse_top_k

bp = Blueprint("api", __name__)
health_bp = Blueprint("health", __name__)

TOP_K_PARAM = "top_k"


@bp.post("/imageclassifier/predict/", strict_slashes=False)
def tutorial_predict() -> Response:
    """The tutorial's endpoint: form field (or JSON) ``b64`` -> ``[[wnid, label, score], ...]``."""
    model = chosen_model(DEFAULT_ROUTE)
    inputs = images_from_request(request, max_batch_size=1)
    if inputs.batch:
        raise BadRequest(f"this route takes one image; POST batches to /v1/models/{DEFAULT_ROUTE}/predict")
    prediction = classify(model, inputs.images)
    rows = model.top_k(prediction.probabilities[0], model.spec.top_k)
    return jsonify([[row["wnid"], row["label"], row["score"]] for row in rows])


@bp.post("/v1/models/<model_route>/predict")
def predict(model_route: str) -> Response:
    """One image (JSON ``b64``, multipart file, ``image/*`` body) or a batch (``instances``) -> top-k.

    Answers ``{"model", "model_version", "predictions"[, "warning"]}``: ``model_version`` is the
    integer version that computed the scores, ``predictions`` a list of ``{"wnid", "label", "score"}``
    (for a batch, one such list per image), ``warning`` present when the weights are untrained.
    """
    model = chosen_model(model_route)
    k = model.check_top_k(parse_top_k(request.args.get(TOP_K_PARAM), model.spec.top_k))
    inputs = images_from_request(request, get_registry().config.max_batch_size)
    prediction = classify(model, inputs.images)
    rows = [model.top_k(scores, k) for scores in prediction.probabilities]
    body: dict[str, Any] = {"model": model.spec.route, "model_version": prediction.version,
                            "predictions": rows if inputs.batch else rows[0]}
    if prediction.warning:
        body["warning"] = prediction.warning
    return jsonify(body)


@bp.get("/v1/models")
def list_models() -> Response:
    """Every configured model with its state on its model server (never 500 when one is down)."""
    return jsonify({"models": [model.status() for model in get_registry().models.values()]})


@bp.get("/v1/models/<model_route>")
def model_status(model_route: str) -> Response:
    """One configured model's state on its model server."""
    return jsonify(get_model(model_route).status())


@health_bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Never calls the model server."""
    return jsonify({"status": "ok"})


@health_bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 once every configured model is AVAILABLE on its model server, else 503."""
    models = [model.status() for model in get_registry().models.values()]
    ready = all(m["state"] == AVAILABLE for m in models)
    return jsonify({"ready": ready, "models": models}), 200 if ready else 503


def chosen_model(route: str) -> ServedModel:
    """The model served at ``route`` (ModelNotFound otherwise), recorded on ``g`` for logs and metrics."""
    model = get_model(route)
    g.model_name = model.spec.route
    return model


def classify(model: ServedModel, images: list[bytes]) -> Prediction:
    """Preprocess ``images`` here, run them on the model server, record the version on ``g``."""
    # Encoded in its own statement so the pixel batch is freed before the wait on the model server.
    encoded = model.encode(preprocess_images(model, images))
    prediction = model.predict(encoded, get_request_id())
    g.model_version = prediction.version
    return prediction


def preprocess_images(model: ServedModel, images: list[bytes]) -> np.ndarray:
    """Decode and preprocess each image for ``model`` into one (N, H, W, 3) batch (``load_image``)."""
    registry = get_registry()
    max_pixels = registry.config.max_image_pixels
    arrays = []
    for i, data in enumerate(images):
        try:
            # One slot per image, not per request, so a batch does not hold up single images.
            with registry.decode_slots:
                arrays.append(model.load_image(data, max_pixels))
        except ImageDecodeError as exc:
            where = f"instances[{i}]: " if len(images) > 1 else ""
            raise BadRequest(f"{where}{exc}") from exc
    # One image (nearly every request) is a view, not a copy.
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
