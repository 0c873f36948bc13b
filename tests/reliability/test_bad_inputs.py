"""The bad-input corpus (corpus.py) against the REAL gunicorn gateway and the REAL model server.

Each case must get exactly its documented answer, and afterwards both processes must still be
healthy: /healthz 200, a good prediction works, the model is AVAILABLE on both.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.reliability.conftest import (PREDICT, assert_gateway_error, assert_healthy, assert_model_server_error,
                                        predict_ok)
from tests.reliability.corpus import GATEWAY_CASES, MODEL_SERVER_CASES, Case, png_with_header, solid_png

pytestmark = pytest.mark.timeout(60)


def send(base_url: str, case: Case) -> requests.Response:
    """Put ``case`` on the wire as its ``send`` kind says."""
    url = base_url + case.path
    headers = dict(case.headers)
    if case.send == "json":
        return requests.request(case.method, url, data=json.dumps(case.payload), timeout=30,
                                headers={"Content-Type": "application/json", **headers})
    if case.send == "raw":
        if case.content_type:
            headers["Content-Type"] = case.content_type
        return requests.request(case.method, url, data=case.payload, headers=headers, timeout=30)
    if case.send == "chunked":
        chunks = (case.payload[i:i + 65536] for i in range(0, len(case.payload), 65536))
        return requests.request(case.method, url, data=chunks, timeout=30,
                                headers={"Content-Type": case.content_type, **headers})
    if case.send == "multipart":
        return requests.request(case.method, url, files=case.payload, headers=headers, timeout=30)
    if case.send == "form":
        return requests.request(case.method, url, data=case.payload, headers=headers, timeout=30)
    if case.send == "path":
        return send_raw_path(base_url, case)
    raise ValueError(case.send)


def send_raw_path(base_url: str, case: Case) -> requests.Response:
    """Send the path exactly as written (requests/urllib3 would resolve ``..`` client-side)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps(case.payload).encode() if case.payload is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(case.method, case.path, body=body, headers=headers)
    raw = connection.getresponse()
    response = requests.Response()
    response.status_code = raw.status
    response.headers = requests.structures.CaseInsensitiveDict(raw.getheaders())
    response._content = raw.read()
    connection.close()
    return response


def ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


def test_the_corpus_is_big_and_names_are_unique():
    names = ids(GATEWAY_CASES) + ["ms_" + name for name in ids(MODEL_SERVER_CASES)]
    assert len(names) == len(set(names))
    assert len(GATEWAY_CASES) >= 40 and len(MODEL_SERVER_CASES) >= 15


# Every gateway case: its exact status and message, JSON errors with a request id, both servers fine after.
@pytest.mark.parametrize("case", GATEWAY_CASES, ids=ids(GATEWAY_CASES))
def test_gateway_answers_bad_input_and_stays_healthy(stack, good_png, case):
    response = send(stack.gateway.url, case)
    if case.status == 200:
        assert response.status_code == 200, response.text[:500]
        body = response.json()
        if case.path.startswith(PREDICT):
            predictions = body["predictions"]
            assert predictions and (isinstance(predictions[0], list) or len(predictions) == 5)
    else:
        assert_gateway_error(response, case.status, case.message)
    assert b"root:" not in response.content  # no /etc/passwd, whatever the path said
    request_id = response.headers["X-Request-ID"]
    assert 1 <= len(request_id) <= 128 and request_id.replace("-", "").replace(".", "").replace("_", "").isalnum()
    assert_healthy(stack, good_png)


# Every model server case: TF Serving's status and {"error"} body; the server keeps serving.
@pytest.mark.parametrize("case", MODEL_SERVER_CASES, ids=ids(MODEL_SERVER_CASES))
def test_model_server_answers_bad_input_and_stays_healthy(stack, good_png, case):
    response = send(stack.model_server.url, case)
    if case.status == 200:
        assert response.status_code == 200, response.text[:500]
        # Whether the NaN reaches the scores depends on the CPU's kernels (oneDNN's ReLU maps NaN to 0
        # with AVX-512), so only the answer's shape is checked; the bare NaN tokens TF Serving writes
        # are covered by tests/model_server/test_predict_codec.py. Python's json accepts them either way.
        predictions = json.loads(response.content)["predictions"]
        assert len(predictions) == 1 and len(predictions[0]) == 10
    else:
        assert_model_server_error(response, case.status, case.message)
    assert_healthy(stack, good_png)


# Sanitised ids: the gateway never echoes an unsafe or huge X-Request-ID.
@pytest.mark.parametrize("sent", ["r" * 8000, 'a b "c" <script>', "ok-id.1_2"])
def test_request_id_is_sanitised(stack, good_png, sent):
    response = requests.post(stack.gateway.url + PREDICT, data=good_png, timeout=10,
                             headers={"Content-Type": "image/png", "X-Request-ID": sent})
    assert response.status_code == 200
    echoed = response.headers["X-Request-ID"]
    assert echoed == sent if sent == "ok-id.1_2" else (len(echoed) == 32 and echoed != sent)


# Headers beyond gunicorn's per-field limit (8190 bytes) are refused by gunicorn itself, before the app.
def test_header_over_gunicorn_limit_is_refused_and_harmless(stack, good_png):
    response = requests.post(stack.gateway.url + PREDICT, data=good_png, timeout=10,
                             headers={"Content-Type": "image/png", "X-Padding": "x" * 20_000})
    assert 400 <= response.status_code < 500
    assert_healthy(stack, good_png)


# A decompression bomb is refused from its header: quickly, without the worker's memory growing.
@pytest.mark.parametrize("image", [png_with_header(100_000, 100_000), png_with_header(30_000, 30_000),
                                   solid_png(2100, 2000)], ids=["10G-pixels", "900M-pixels", "4.2M-pixels-real"])
def test_decompression_bomb_is_refused_fast_and_small(stack, good_png, image):
    workers = gunicorn_workers(stack.gateway.popen.pid)
    before = sum(rss_mb(pid) for pid in workers)
    started = time.monotonic()
    response = requests.post(stack.gateway.url + PREDICT, data=image, headers={"Content-Type": "image/png"},
                             timeout=10)
    elapsed = time.monotonic() - started
    assert_gateway_error(response, 400, "")
    assert elapsed < 1.5, elapsed
    # A decoded 4.2 MP RGB image alone is 12 MB, a 900 MP one 2.7 GB.
    assert sum(rss_mb(pid) for pid in workers) - before < 30
    assert_healthy(stack, good_png)


# The configured body limit (1 MB here, not the 10 MB default) is the one enforced, for every kind of body.
def test_configured_body_limit_holds_exactly(stack, good_png):
    from tests.reliability.conftest import MAX_BODY_BYTES

    just_under = good_png + b"\0" * (MAX_BODY_BYTES - len(good_png) - 100)
    assert requests.post(stack.gateway.url + PREDICT, data=just_under, headers={"Content-Type": "image/png"},
                         timeout=10).status_code in (200, 400)  # trailing bytes after IEND: Pillow's call
    over = requests.post(stack.gateway.url + PREDICT, data=b"\0" * (MAX_BODY_BYTES + 1),
                         headers={"Content-Type": "image/png"}, timeout=10)
    assert_gateway_error(over, 413, "")
    predict_ok(stack.gateway.url, good_png)


# A client that announces a huge body and never sends it does not cost the gateway a worker for ever.
def test_announced_body_over_limit_is_answered_without_reading_it(stack, good_png):
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=10) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     f"Content-Length: 999999999\r\n\r\n".encode())
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 413"), reply[:300]
    assert '"request_id"' in reply
    assert_healthy(stack, good_png)


def read_reply(sock: socket.socket) -> str:
    """One whole HTTP reply (headers + Content-Length body): gunicorn writes the headers and the body
    separately, so a single recv may return the headers alone."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _reply_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _reply_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return len(head) + 4 + (int(lengths[0]) if lengths else 0)


def gunicorn_workers(arbiter_pid: int) -> list[int]:
    children = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


assert os.name == "posix"  # /proc and process groups
