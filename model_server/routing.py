"""URL grammar of TF Serving's REST API (the only place request paths are parsed).

Mirrors ``ParseModelInfo`` in ``model_servers/http_rest_api_util.cc`` and the
dispatch in ``HttpRestApiHandler::ProcessRequest``: the same two regexes
(case-insensitive, full match), the same percent-decoding of model name and label,
and the same errors, including the quirks (e.g. ``:PREDICT`` matches the regex but
is then rejected as malformed because the verb comparison is case-sensitive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from model_server.errors import InvalidArgument

VERB_PREDICT = "predict"
VERB_CLASSIFY = "classify"
VERB_REGRESS = "regress"
VERBS = frozenset({VERB_PREDICT, VERB_CLASSIFY, VERB_REGRESS})

SUBRESOURCE_METADATA = "metadata"

METHOD_GET = "GET"
METHOD_POST = "POST"

# re.ASCII keeps \d to 0-9 as in RE2; re.IGNORECASE matches RE2's (?i).
_FLAGS = re.IGNORECASE | re.ASCII
_PREDICTION_API_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    _FLAGS,
)
_MODEL_STATUS_API_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?",
    _FLAGS,
)
# kHTTPRestApiHandlerPathRegex; RE2's '.' does not match newline, nor does ours.
_API_PATH_RE = re.compile(r"/v1/.*", re.IGNORECASE)

# absl::SimpleAtoi into int64_t.
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ModelRequest:
    """A parsed REST API path.

    ``verb`` is "predict", "classify" or "regress" for POST and None for GET;
    ``subresource`` is "metadata" for a metadata GET, else None. ``name`` is never
    empty. At most one of ``version`` and ``label`` is set.
    """

    name: str
    version: int | None
    label: str | None
    verb: str | None
    subresource: str | None


def _strip_query(path: str) -> str:
    # TF Serving matches uri_path(), which excludes the query string.
    return path.split("?", 1)[0]


def is_api_path(path: str) -> bool:
    """Whether TF Serving's top-level dispatcher hands ``path`` to the REST handler.

    Any path matching ``(?i)/v1/.*`` goes to the handler (which may then call it
    malformed); anything else is not served by the REST API at all.
    """
    return _API_PATH_RE.fullmatch(_strip_query(path)) is not None


def decode_component(text: str) -> str:
    """Percent-decode a model name or label from a URL path, as TF Serving does."""
    # curl_easy_unescape: %XX only ('+' stays '+'), bad escapes left verbatim.
    # Undecodable bytes cannot name a configured model, so replacing them is safe.
    return unquote(text, encoding="utf-8", errors="replace")


def parse_version(text: str) -> int:
    """A version path segment (ASCII digits) as an int64; InvalidArgument when it overflows."""
    version = int(text)
    if version > _INT64_MAX:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return version


def parse_request(method: str, path: str) -> ModelRequest:
    """Parse an HTTP method and path into a :class:`ModelRequest`.

    Grammar (case-insensitive, full match, query string ignored)::

        GET  /v1/models/NAME[/versions/V|/labels/L][/metadata]
        POST /v1/models/NAME[/versions/V|/labels/L]:(predict|classify|regress)

    Raises InvalidArgument exactly as TF Serving: ``Malformed request: METHOD PATH``
    for anything that does not match (other methods, unknown or non-lowercase verb,
    version and label together, non-numeric version, trailing slash...),
    ``Failed to convert version: V to numeric.`` when V overflows int64 and
    ``Missing model name in request.`` for ``GET /v1/models``.
    """
    uri_path = _strip_query(path)
    malformed = InvalidArgument(f"Malformed request: {method} {uri_path}")
    if method == METHOD_POST:
        match = _PREDICTION_API_RE.fullmatch(uri_path)
    elif method == METHOD_GET:
        match = _MODEL_STATUS_API_RE.fullmatch(uri_path)
    else:
        raise malformed
    if match is None:
        raise malformed

    raw_name, raw_version, raw_label, last = match.groups()
    name = decode_component(raw_name) if raw_name else ""
    version = parse_version(raw_version) if raw_version else None
    label = decode_component(raw_label) if raw_label else None

    if method == METHOD_POST:
        # The regex is case-insensitive but the handler compares the verb
        # case-sensitively, so ":Predict" falls through to "Malformed request".
        if last not in VERBS:
            raise malformed
        return ModelRequest(name, version, label, last, None)

    if not name:
        raise InvalidArgument("Missing model name in request.")
    # Likewise "/METADATA" matches but is served as a model status request.
    subresource = SUBRESOURCE_METADATA if last == SUBRESOURCE_METADATA else None
    return ModelRequest(name, version, label, None, subresource)
