"""URL grammar of the v2 API (inference_rest.md's route table)."""

import pytest

from model_server import errors
from model_server.v2_routing import (INFER, MODEL_METADATA, MODEL_READY, SERVER_LIVE, SERVER_METADATA, SERVER_READY,
                                     V2Request, is_api_path, parse_request)


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/v2", V2Request(SERVER_METADATA)),
        ("GET", "/v2/", V2Request(SERVER_METADATA)),
        ("GET", "/v2/health/live", V2Request(SERVER_LIVE)),
        ("GET", "/v2/health/ready?verbose=1", V2Request(SERVER_READY)),
        ("GET", "/v2/models/m", V2Request(MODEL_METADATA, "m")),
        ("GET", "/v2/models/m/versions/7", V2Request(MODEL_METADATA, "m", 7)),
        ("GET", "/v2/models/m/ready", V2Request(MODEL_READY, "m")),
        ("GET", "/v2/models/m/versions/007/ready", V2Request(MODEL_READY, "m", 7)),
        ("POST", "/v2/models/m/infer", V2Request(INFER, "m")),
        ("POST", "/v2/models/a%20b/versions/3/infer", V2Request(INFER, "a b", 3)),
        # A model may be called "ready" or "infer": the last segment only counts after a name.
        ("GET", "/v2/models/ready", V2Request(MODEL_METADATA, "ready")),
    ],
)
def test_parse_ok(method, path, expected):
    assert parse_request(method, path) == expected


@pytest.mark.parametrize(
    "method, path, error, message",
    [
        ("GET", "/v2/models", errors.NotFound, "Not found: GET /v2/models"),
        ("GET", "/v2/models/m/metadata", errors.NotFound, "Not found"),
        ("GET", "/v2/models/m/versions/7/", errors.NotFound, "Not found"),
        ("GET", "/v2/repository/index", errors.NotFound, "Not found"),
        ("POST", "/v2/health/live", errors.InvalidArgument, "/v2/health/live takes GET, not POST"),
        ("GET", "/v2/models/m/infer", errors.InvalidArgument, "takes POST, not GET"),
        ("POST", "/v2/models/m", errors.InvalidArgument, "takes GET, not POST"),
        # The spec's own example of a version ("v10") is not a SavedModel version directory.
        ("GET", "/v2/models/m/versions/v10", errors.InvalidArgument, "must be a non-negative integer, got 'v10'"),
        ("GET", "/v2/models/m/versions/-1", errors.InvalidArgument, "non-negative integer"),
        ("POST", "/v2/models/m/versions/99999999999999999999/infer", errors.InvalidArgument, "Failed to convert"),
    ],
)
def test_parse_errors(method, path, error, message):
    with pytest.raises(error) as caught:
        parse_request(method, path)
    assert message in caught.value.message


@pytest.mark.parametrize("path, expected", [("/v2", True), ("/v2/models/m/infer", True), ("/v2x", False),
                                            ("/v1/models/m", False), ("/", False)])
def test_is_api_path(path, expected):
    assert is_api_path(path) is expected
