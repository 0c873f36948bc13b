"""Error types of the REST protocol, mirroring TF Serving's canonical status codes.

Every failure the protocol layer reports is a :class:`ServingError` subclass named
after the absl/TF canonical code. The HTTP status comes from one table that copies
``ToHTTPStatusCode`` in TF Serving's ``model_servers/http_server.cc``, so the mapping
cannot drift between classes.
"""

from __future__ import annotations

import orjson

# Key of the error message in every JSON error response body.
kErrorResponseKey = "error"

# Canonical code -> HTTP status, as http_server.cc ToHTTPStatusCode.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "CANCELLED": 499,  # nginx's "client closed request"
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# http_server.cc falls back to 500 for any code it does not list.
_DEFAULT_HTTP_STATUS = 500


class ServingError(Exception):
    """Base of all protocol errors; carries a canonical code and its HTTP status.

    ``str(exc)`` and ``exc.message`` are the message sent to the client in
    ``{"error": ...}``. Instantiate a subclass; the base class reports UNKNOWN.
    """

    code: str = "UNKNOWN"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        """HTTP status TF Serving would reply with for this error's code."""
        return HTTP_STATUS_BY_CODE.get(self.code, _DEFAULT_HTTP_STATUS)

    def status_string(self) -> str:
        """``CODE: message``, the form absl::Status::ToString() gives.

        TF Serving embeds it when it wraps one error inside another.
        """
        return f"{self.code}: {self.message}"


class Cancelled(ServingError):
    """Request cancelled. HTTP 499."""

    code = "CANCELLED"


class Unknown(ServingError):
    """Error of unknown origin. HTTP 500."""

    code = "UNKNOWN"


class InvalidArgument(ServingError):
    """Malformed request URL or body. HTTP 400."""

    code = "INVALID_ARGUMENT"


class DeadlineExceeded(ServingError):
    """Request took longer than its deadline. HTTP 504."""

    code = "DEADLINE_EXCEEDED"


class NotFound(ServingError):
    """Model, version or label not found. HTTP 404."""

    code = "NOT_FOUND"


class AlreadyExists(ServingError):
    """Entity already exists. HTTP 409."""

    code = "ALREADY_EXISTS"


class PermissionDenied(ServingError):
    """Caller may not do this. HTTP 403."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(ServingError):
    """Out of capacity, e.g. batching queue full. HTTP 429."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(ServingError):
    """System not in a state to run the request. HTTP 400."""

    code = "FAILED_PRECONDITION"


class Aborted(ServingError):
    """Operation aborted, e.g. by a concurrency conflict. HTTP 409."""

    code = "ABORTED"


class OutOfRange(ServingError):
    """Value outside the valid range. HTTP 400."""

    code = "OUT_OF_RANGE"


class Unimplemented(ServingError):
    """Operation or data type not supported. HTTP 501."""

    code = "UNIMPLEMENTED"


class Internal(ServingError):
    """Internal invariant broken. HTTP 500."""

    code = "INTERNAL"


class Unavailable(ServingError):
    """Service (e.g. a model version) temporarily unavailable. HTTP 503."""

    code = "UNAVAILABLE"


class DataLoss(ServingError):
    """Unrecoverable data loss or corruption. HTTP 500."""

    code = "DATA_LOSS"


class Unauthenticated(ServingError):
    """Missing or invalid credentials. HTTP 401."""

    code = "UNAUTHENTICATED"


def error_for_code(code: str, message: str) -> ServingError:
    """The ServingError subclass for a canonical code name (UNKNOWN for a name it does not know)."""
    classes = {cls.code: cls for cls in ServingError.__subclasses__()}
    return classes.get(code, Unknown)(message)


def error_body(exc: ServingError) -> bytes:
    """JSON body ``{"error": "<message>"}`` TF Serving sends with an error status."""
    return error_json(exc.message)


def error_json(message: str) -> bytes:
    """``{"error": message}``; also for HTTP-level rejections that have no canonical code."""
    try:
        return orjson.dumps({kErrorResponseKey: message})
    except TypeError:
        # Lone surrogates (from undecodable client bytes) are not valid UTF-8;
        # escape them rather than failing to report the original error.
        safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return orjson.dumps({kErrorResponseKey: safe})

