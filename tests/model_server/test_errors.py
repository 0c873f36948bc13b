"""model_server/errors.py: one class per canonical code, one code -> HTTP status table, JSON bodies."""

from __future__ import annotations

import re

import orjson
import pytest

from model_server import errors

# ToHTTPStatusCode in TF Serving's model_servers/http_server.cc, read from its source: every
# canonical code the switch lists, and the status it answers with (the default branch is 500).
TF_SERVING_HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
ERROR_CLASSES = [cls for cls in vars(errors).values()
                 if isinstance(cls, type) and issubclass(cls, errors.ServingError) and cls is not errors.ServingError]


def test_every_error_code_maps_like_tf_serving():
    assert errors.HTTP_STATUS_BY_CODE == {code: status for code, status in TF_SERVING_HTTP_STATUS.items()
                                          if code != "OK"}


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_each_class_answers_its_codes_status_and_its_docstring_says_so(cls):
    exc = cls("boom")
    assert exc.http_status == TF_SERVING_HTTP_STATUS[cls.code]
    assert f"HTTP {exc.http_status}." in cls.__doc__
    # the class is named after its code: INVALID_ARGUMENT -> InvalidArgument
    assert cls.__name__ == "".join(word.capitalize() for word in cls.code.split("_"))


def test_one_class_per_code():
    assert sorted(cls.code for cls in ERROR_CLASSES) == sorted(errors.HTTP_STATUS_BY_CODE)


def test_unlisted_code_is_500_like_the_default_branch():
    class Odd(errors.ServingError):
        code = "SOMETHING_NEW"

    assert Odd().http_status == 500


def test_message_and_status_string():
    exc = errors.NotFound("Servable not found for request: Latest(m)")
    assert str(exc) == exc.message == "Servable not found for request: Latest(m)"
    assert exc.status_string() == "NOT_FOUND: Servable not found for request: Latest(m)"
    assert isinstance(exc, Exception) and not isinstance(errors.ServingError(), errors.NotFound)


def test_error_body_is_the_message_under_error():
    body = errors.error_body(errors.InvalidArgument('JSON Value: "a" Type: String is not of expected type: float'))
    assert orjson.loads(body) == {"error": 'JSON Value: "a" Type: String is not of expected type: float'}
    assert errors.kErrorResponseKey == "error"


def test_error_json_survives_lone_surrogates_from_undecodable_bytes():
    message = b"bad \xff byte".decode("utf-8", "surrogateescape")
    body = orjson.loads(errors.error_json(message))
    assert set(body) == {"error"} and re.fullmatch(r"bad \\udcff byte", body["error"])
