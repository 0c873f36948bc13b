"""The gateway's views: ``api`` (everything that touches a model; authenticated and rate limited by
security.py) and ``health`` (liveness and readiness probes; never authenticated).

Each prediction view is thin: parse the request -> ``ServedModel.classify`` (decode in this request
thread, predict on the model server, top-k) -> render the JSON. Errors are raised and rendered by
errors.py as ``{"error", "request_id"}``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from flask_server.errors import BadRequest
from flask_server.model_config import DEFAULT_ROUTE
from flask_server.registry import get_model, get_registry
from flask_server.request_id import get_request_id
from flask_server.request_parsing import images_from_request, parse_top_k
from flask_server.response_cache import record_result
from flask_server.served_model import Prediction, ServedModel
from flask_server.version_tracker import AVAILABLE

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
    return jsonify([[row["wnid"], row["label"], row["score"]] for row in prediction.top_k[0]])


@bp.post("/v1/models/<model_route>/predict")
def predict(model_route: str) -> Response:
    """One image (JSON ``b64``, multipart file, ``image/*`` body) or a batch (``instances``) -> top-k.

    Answers ``{"model", "model_version", "predictions"[, "warning"]}``: ``model_version`` is the
    integer version that computed the scores, ``predictions`` a list of ``{"wnid", "label", "score"}``
    (for a batch, one such list per image), ``warning`` present when the weights are untrained.
    """
    model = chosen_model(model_route)
    # Checked against the model before the body is read, so a bad top_k is the error reported.
    # Without one, classify uses the route's top_k capped at the version's classes.
    raw_k = request.args.get(TOP_K_PARAM)
    k = None if raw_k is None else model.check_top_k(parse_top_k(raw_k, model.spec.top_k))
    inputs = images_from_request(request, get_registry().max_batch_size)
    prediction = classify(model, inputs.images, k)
    body: dict[str, Any] = {"model": model.spec.route, "model_version": prediction.version,
                            "predictions": prediction.top_k if inputs.batch else prediction.top_k[0]}
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


def classify(model: ServedModel, images: list[bytes], k: int | None = None) -> Prediction:
    """``model.classify`` under this request's id, recording the version that answered on ``g``
    and whether the response cache answered (``X-Cache``, metrics)."""
    prediction = model.classify(images, k, get_request_id())
    g.model_version = prediction.version
    record_result(prediction.cache)
    return prediction
