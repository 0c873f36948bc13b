"""URL grammar of the Open Inference Protocol (KServe v2) REST API (the only place /v2 paths are parsed).

The routes of kserve/open-inference-protocol ``specification/protocol/inference_rest.md``::

    GET  /v2                                             server metadata
    GET  /v2/health/live | /v2/health/ready              server health
    GET  /v2/models/NAME[/versions/V]                    model metadata
    GET  /v2/models/NAME[/versions/V]/ready              model health
    POST /v2/models/NAME[/versions/V]/infer              inference

Like ``routing.py`` for /v1: full match, query string ignored, NAME percent-decoded, and V must be
a non-negative int64, since that is what a SavedModel version directory is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model_server.errors import InvalidArgument, NotFound
from model_server.routing import METHOD_GET, METHOD_POST, decode_component, parse_version

SERVER_METADATA = "server_metadata"
SERVER_LIVE = "server_live"
SERVER_READY = "server_ready"
MODEL_METADATA = "model_metadata"
MODEL_READY = "model_ready"
INFER = "infer"

_SERVER_ROUTES = {"/v2": SERVER_METADATA, "/v2/": SERVER_METADATA,
                  "/v2/health/live": SERVER_LIVE, "/v2/health/ready": SERVER_READY}
_MODEL_RE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?", re.ASCII)
_VERSION_RE = re.compile(r"\d+", re.ASCII)
_API_PATH_RE = re.compile(r"/v2(?:/.*)?")


@dataclass(frozen=True)
class V2Request:
    """A parsed /v2 path: which API, and for model APIs the model name and optional version."""

    api: str
    name: str = ""
    version: int | None = None


def _strip_query(path: str) -> str:
    return path.split("?", 1)[0]


def is_api_path(path: str) -> bool:
    """Whether ``path`` belongs to the v2 API (``/v2`` or below it)."""
    return _API_PATH_RE.fullmatch(_strip_query(path)) is not None


def parse_request(method: str, path: str) -> V2Request:
    """Parse an HTTP method and /v2 path into a :class:`V2Request`.

    Raises NotFound (404) for a path outside the grammar, InvalidArgument (400) for a method the
    route does not take or a version that is not a non-negative integer.
    """
    uri_path = _strip_query(path)
    api = _SERVER_ROUTES.get(uri_path)
    if api is not None:
        _check_method(method, METHOD_GET, uri_path)
        return V2Request(api)
    match = _MODEL_RE.fullmatch(uri_path)
    if match is None:
        raise NotFound(f"Not found: {method} {uri_path}")
    raw_name, raw_version, last = match.groups()
    api = {None: MODEL_METADATA, "ready": MODEL_READY, "infer": INFER}[last]
    _check_method(method, METHOD_POST if api == INFER else METHOD_GET, uri_path)
    version = None
    if raw_version is not None:
        if not _VERSION_RE.fullmatch(raw_version):
            raise InvalidArgument(f"Model version must be a non-negative integer, got '{decode_component(raw_version)}'")
        version = parse_version(raw_version)
    return V2Request(api, decode_component(raw_name), version)


def _check_method(method: str, expected: str, uri_path: str) -> None:
    if method != expected:
        raise InvalidArgument(f"{uri_path} takes {expected}, not {method}")
