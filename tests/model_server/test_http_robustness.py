"""HTTP edge cases against a real ``python -m model_server``: every answer is JSON, none hangs.

Raw sockets put on the wire what ordinary clients refuse to send (unknown methods, HTTP/0.9 lines,
oversized request lines, garbage). Every case must get a JSON ``{"error": ...}`` with the status TF
Serving's libevent front would use, the connection must close promptly when the request could not be
understood, and the server must keep serving afterwards.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PREDICT = "/v1/models/tiny:predict"
MAX_BODY_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(model_paths, model_server_factory):
    with model_server_factory(model_name="tiny", model_base_path=model_paths["tiny"],
                              extra_args=["--rest_api_host=127.0.0.1"]) as process:
        yield process


@pytest.fixture(autouse=True)
def still_serving(server):
    """After each case the server still answers a normal request."""
    yield
    assert requests.get(server.url + "/v1/models/tiny", timeout=10).status_code == 200


def exchange(server, raw: bytes, timeout: float = 5.0) -> tuple[http.client.HTTPResponse, bytes, float]:
    """Send ``raw``, read one response and wait for the server to close; returns it, its body, seconds to EOF."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        assert sock.recv(1) == b"", "the server kept the connection open"
    return response, body, time.monotonic() - started


def assert_json_error(response: http.client.HTTPResponse, body: bytes, status: int, fragment: str = "") -> None:
    assert response.status == status, body
    assert response.getheader("Content-Type") == "application/json"
    error = json.loads(body)
    assert set(error) == {"error"} and fragment in error["error"], error


# -- 1: any method reaches the dispatcher ------------------------------------------------------------

@pytest.mark.parametrize("method, path, status, message", [
    ("BREW", PREDICT, 400, f"Malformed request: BREW {PREDICT}"),
    ("TRACE", "/v1/models/tiny", 400, "Malformed request: TRACE /v1/models/tiny"),
    ("BREW", "/elsewhere", 404, "Not found: BREW /elsewhere"),
])
def test_unknown_method_gets_a_json_answer_and_keeps_the_connection(server, method, path, status, message):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        assert_json_error(response, response.read(), status, message)
        connection.request("GET", "/v1/models/tiny")  # same connection: still in step
        assert connection.getresponse().status == 200
    finally:
        connection.close()


# -- 2: HTTP/0.9 is refused at once -------------------------------------------------------------------

@pytest.mark.parametrize("line", [b"GET /v1/models/tiny\r\n", b"POST " + PREDICT.encode() + b"\r\n"])
def test_http09_request_line_is_refused_and_closed_promptly(server, line):
    response, body, seconds = exchange(server, line)
    assert_json_error(response, body, 400, "no HTTP version")
    assert seconds < 3


# -- 3: http.server's own rejections are JSON too ------------------------------------------------------

@pytest.mark.parametrize("raw, status, fragment", [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, ""),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \x8a\xff\r\n\r\n", 400, "Bad request"),
    (b"GET /v1/models/tiny HTTP/one\r\n\r\n", 400, "Bad request version"),
    (b"GET /v1/models/tiny HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version"),
    (b"GET /v1/models/tiny HTTP/1.1\r\nX-Pad: " + b"x" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
], ids=["request_line_too_long", "garbage", "bad_version", "http2_line", "header_too_long"])
def test_http_level_rejections_are_json(server, raw, status, fragment):
    response, body, _ = exchange(server, raw)
    assert_json_error(response, body, status, fragment)


# -- 4: bodies over the limit: 400 that says so, before reading them -----------------------------------

@pytest.mark.parametrize("path, framing", [
    (PREDICT, b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)),
    (PREDICT, b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY_BYTES + 1)),
    ("/elsewhere", b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)),
], ids=["content_length", "chunked", "non_api_path"])
def test_body_over_the_limit_is_a_clear_400(server, path, framing):
    response, body, _ = exchange(server, b"POST %s HTTP/1.1\r\nHost: x\r\n" % path.encode() + framing)
    assert_json_error(response, body, 400, f"Request body too large: {MAX_BODY_BYTES + 1} bytes exceeds the limit")
