"""URL grammar and error-table tests, re-expressing http_rest_api_util_test.cc."""

import pytest

from model_server import errors
from model_server.routing import ModelRequest, is_api_path, parse_request

RESERVED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
DECODED = "!#$%&'()*+,/:;=?@[]"


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", f"/v1/models/modelname{RESERVED}", ModelRequest("modelname" + DECODED, None, None, None, None)),
        ("GET", "/v1/models/modelname/versions/99", ModelRequest("modelname", 99, None, None, None)),
        ("GET", "/v1/models/modelname/labels/latest", ModelRequest("modelname", None, "latest", None, None)),
        ("GET", f"/v1/models/modelname/labels/latest{RESERVED}", ModelRequest("modelname", None, "latest" + DECODED, None, None)),
        ("GET", "/v1/models/modelname/labels/latest/metadata", ModelRequest("modelname", None, "latest", None, "metadata")),
        ("GET", f"/v1/models/m{RESERVED}/labels/l{RESERVED}/metadata", ModelRequest("m" + DECODED, None, "l" + DECODED, None, "metadata")),
        ("GET", "/v1/models/m/metadata", ModelRequest("m", None, None, None, "metadata")),
        ("GET", "/v1/models/m/versions/007/metadata", ModelRequest("m", 7, None, None, "metadata")),
        # A label may itself be called "metadata".
        ("GET", "/v1/models/m/labels/metadata", ModelRequest("m", None, "metadata", None, None)),
        # Case-insensitive regex, but "METADATA" fails the handler's exact compare -> status.
        ("GET", "/V1/MODELS/m/VERSIONS/3/METADATA", ModelRequest("m", 3, None, None, None)),
        # The optional name group is greedy, as in RE2: a model called "metadata".
        ("GET", "/v1/models/metadata", ModelRequest("metadata", None, None, None, None)),
        ("GET", "/v1/models/m?x=1", ModelRequest("m", None, None, None, None)),
        ("GET", "/v1/models/a+b%zz", ModelRequest("a+b%zz", None, None, None, None)),
        ("POST", f"/v1/models/modelname{RESERVED}:predict", ModelRequest("modelname" + DECODED, None, None, "predict", None)),
        ("POST", "/v1/models/modelname/versions/99:predict", ModelRequest("modelname", 99, None, "predict", None)),
        ("POST", "/v1/models/modelname/labels/latest:classify", ModelRequest("modelname", None, "latest", "classify", None)),
        ("POST", f"/v1/models/m{RESERVED}/labels/l{RESERVED}:regress", ModelRequest("m" + DECODED, None, "l" + DECODED, "regress", None)),
        ("POST", "/V1/Models/m/Versions/1:predict?debug=1", ModelRequest("m", 1, None, "predict", None)),
    ],
)
def test_parse_ok(method, path, expected):
    assert parse_request(method, path) == expected


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/foo"),
        ("GET", "/v1/models/foo:predict"),
        ("GET", "/v1/models/foo/version/50:predict"),
        ("GET", "/v1/models/foo/"),
        ("GET", "/v1/models/"),
        ("GET", "/v1/models/foo/versions/1/labels/x"),
        ("GET", "/v1/models/foo/versions/abc"),
        ("POST", "/v1/foo"),
        ("POST", "/v1/models"),
        ("POST", "/v1/models/foo"),
        ("POST", "/v1/models/foo:bar"),
        ("POST", "/v1/models/foo:predict/"),
        ("POST", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/versions/string:predict"),
        ("POST", "/v1/models/foo/metadata"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),
        ("POST", "/v1/models/foo/versions/-1:predict"),
        ("POST", "/v1/models/foo/versions/\u0661:predict"),  # non-ASCII digit
        # The regex is case-insensitive; the verb compare is not.
        ("POST", "/v1/models/foo:PREDICT"),
        ("PUT", "/v1/models/foo:predict"),
        ("DELETE", "/v1/models/foo"),
        ("get", "/v1/models/foo"),
    ],
)
def test_malformed(method, path):
    with pytest.raises(errors.InvalidArgument) as info:
        parse_request(method, path)
    assert str(info.value) == f"Malformed request: {method} {path}"
    assert info.value.http_status == 400


def test_malformed_message_omits_query():
    with pytest.raises(errors.InvalidArgument, match=r"^Malformed request: POST /v1/models/foo:bar$"):
        parse_request("POST", "/v1/models/foo:bar?x=1")


@pytest.mark.parametrize(
    "method, path, message",
    [
        ("POST", f"/v1/models/foo/versions/{2**64 - 1}:predict", f"Failed to convert version: {2**64 - 1} to numeric."),
        # Version conversion happens before the (case-sensitive) verb check.
        ("POST", f"/v1/models/foo/versions/{2**63}:PREDICT", "Failed to convert version"),
        ("GET", f"/v1/models/foo/versions/{2**63}", "Failed to convert version"),
        ("GET", "/v1/models", "Missing model name in request."),
        ("GET", "/v1/models/versions/3", "Missing model name in request."),
    ],
)
def test_invalid_argument(method, path, message):
    with pytest.raises(errors.InvalidArgument) as info:
        parse_request(method, path)
    assert message in str(info.value)


def test_max_int64_version():
    assert parse_request("GET", f"/v1/models/m/versions/{2**63 - 1}").version == 2**63 - 1


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v1/models/foo", True),
        ("/V1/anything", True),
        ("/v1/", True),
        ("/v1/x?y", True),
        ("/v1", False),
        ("/v2/models/foo", False),
        ("/monitoring/prometheus/metrics", False),
        ("/", False),
        ("/v1/\n", False),
    ],
)
def test_is_api_path(path, expected):
    assert is_api_path(path) is expected


@pytest.mark.parametrize(
    "cls, code, status",
    [
        (errors.InvalidArgument, "INVALID_ARGUMENT", 400),
        (errors.FailedPrecondition, "FAILED_PRECONDITION", 400),
        (errors.OutOfRange, "OUT_OF_RANGE", 400),
        (errors.NotFound, "NOT_FOUND", 404),
        (errors.AlreadyExists, "ALREADY_EXISTS", 409),
        (errors.Aborted, "ABORTED", 409),
        (errors.PermissionDenied, "PERMISSION_DENIED", 403),
        (errors.Unauthenticated, "UNAUTHENTICATED", 401),
        (errors.ResourceExhausted, "RESOURCE_EXHAUSTED", 429),
        (errors.Unavailable, "UNAVAILABLE", 503),
        (errors.DeadlineExceeded, "DEADLINE_EXCEEDED", 504),
        (errors.Unimplemented, "UNIMPLEMENTED", 501),
        (errors.Internal, "INTERNAL", 500),
        (errors.DataLoss, "DATA_LOSS", 500),
        (errors.Unknown, "UNKNOWN", 500),
        (errors.Cancelled, "CANCELLED", 499),
    ],
)
def test_error_table(cls, code, status):
    exc = cls("boom")
    assert (exc.code, exc.http_status, exc.message, str(exc)) == (code, status, "boom", "boom")
    assert isinstance(exc, errors.ServingError)
    assert str(status) in cls.__doc__


def test_error_body():
    assert errors.error_body(errors.NotFound('Bad key: "key"')) == b'{"error":"Bad key: \\"key\\""}'
    # Lone surrogates cannot be UTF-8 encoded; the body must still be produced.
    assert b"error" in errors.error_body(errors.InvalidArgument("bad \udcff name"))
