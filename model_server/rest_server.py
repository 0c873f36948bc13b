"""The HTTP/REST front: TF Serving's /v1 API and the Prometheus page, on the stdlib HTTP server.

``RestApi`` is the thin request logic (route -> look up the version -> decode -> run -> encode),
free of HTTP details; ``RestServer`` is the only code that speaks HTTP. ThreadingHTTPServer gives
HTTP/1.1 keep-alive with one daemon thread per connection and no extra dependency; model calls
run on a bounded pool (or the batch scheduler) so ``--rest_api_timeout_in_ms`` can be enforced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson

from model_server import routing
from model_server.errors import InvalidArgument, NotFound, ServingError, error_body, error_json
from model_server.example_codec import (build_examples, make_classify_response, make_regress_response,
                                        parse_example_body)
from model_server.model_calls import SubmitFn, run_with_deadline
from model_server.monitoring import Metrics
from model_server.predict_codec import make_predict_response, parse_predict_body, request_to_tensors
from model_server.repository import ModelRepository, ServableHandle
from model_server.servable import CLASSIFY_CLASSES_KEY, CLASSIFY_SCORES_KEY, EXAMPLES_INPUT_KEY, REGRESS_OUTPUTS_KEY

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # ~45 full-size images as b64; anything bigger is a client bug
JSON_CONTENT_TYPE = "application/json"
REQUEST_ID_HEADER = "X-Request-ID"
API_STATUS = "GetModelStatus"
API_METADATA = "GetModelMetadata"
_LISTEN_BACKLOG = 128


@dataclass
class ApiResponse:
    """What the API answered, plus the labels the metrics need."""

    http_status: int
    body: bytes
    model_name: str = ""
    version: str = ""
    api: str = ""
    status_code: str = "OK"


class RestApi:
    """TF Serving's REST API over a model repository (no HTTP in here)."""

    def __init__(self, repository: ModelRepository, submit: SubmitFn, timeout_s: float):
        self._repository = repository
        self._submit = submit
        self._timeout_s = timeout_s

    def handle(self, method: str, path: str, body: bytes) -> ApiResponse:
        """Answer one /v1 request; errors become ``{"error": ...}`` with their HTTP status."""
        started = time.monotonic()
        response = ApiResponse(200, b"")
        try:
            request = routing.parse_request(method, path)
            response.model_name = request.name
            if request.verb is None:
                response.body = self._get(request, response)
            elif request.verb == routing.VERB_PREDICT:
                response.api = request.verb
                response.body = self._predict(request, body, started, response)
            else:
                response.api = request.verb
                response.body = self._classify_or_regress(request, body, started, response)
        except ServingError as exc:
            response.http_status, response.body, response.status_code = exc.http_status, error_body(exc), exc.code
        return response

    def _get(self, request: routing.ModelRequest, response: ApiResponse) -> bytes:
        if request.subresource == routing.SUBRESOURCE_METADATA:
            response.api = API_METADATA
            with self._repository.acquire(request.name, request.version, request.label) as handle:
                response.version = str(handle.version)
                return orjson.dumps(handle.servable.metadata())
        # Like GetModelStatusImpl, a label is accepted but not used to filter.
        response.api = API_STATUS
        statuses = self._repository.version_status(request.name, request.version)
        return orjson.dumps({"model_version_status": statuses})

    def _predict(self, request: routing.ModelRequest, body: bytes, started: float,
                 response: ApiResponse) -> bytes:
        parsed = parse_predict_body(body)
        with self._repository.acquire(request.name, request.version, request.label) as handle:
            response.version = str(handle.version)
            signature = handle.servable.predict_signature(parsed.signature_name)
            tensors = request_to_tensors(parsed, signature.inputs)
            outputs = self._run(handle, signature.name, tensors, started)
        return make_predict_response(outputs, parsed.format)

    def _classify_or_regress(self, request: routing.ModelRequest, body: bytes, started: float,
                             response: ApiResponse) -> bytes:
        signature_name, context, examples = parse_example_body(body, request.verb)
        with self._repository.acquire(request.name, request.version, request.label) as handle:
            response.version = str(handle.version)
            signature = handle.servable.example_signature(signature_name, request.verb)
            serialized = build_examples(context, examples)
            tensors = {EXAMPLES_INPUT_KEY: np.array(serialized, dtype=object)}
            outputs = self._run(handle, signature.name, tensors, started)
        if request.verb == routing.VERB_CLASSIFY:
            return make_classify_response(outputs.get(CLASSIFY_CLASSES_KEY), outputs.get(CLASSIFY_SCORES_KEY),
                                          len(serialized))
        return make_regress_response(outputs[REGRESS_OUTPUTS_KEY], len(serialized))

    def _run(self, handle: ServableHandle, signature: str, tensors: dict[str, np.ndarray],
             started: float) -> dict[str, np.ndarray]:
        remaining = self._timeout_s - (time.monotonic() - started)
        return run_with_deadline(self._submit, handle, signature, tensors, remaining)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = _LISTEN_BACKLOG

    def __init__(self, address, api: RestApi, metrics: Metrics | None, metrics_path: str):
        super().__init__(address, _RequestHandler, bind_and_activate=False)
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise
        self.api = api
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.closing = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server answers a bad first line before it knows the version; its default (HTTP/0.9)
    # would send that answer without a status line or headers.
    default_request_version = "HTTP/1.0"
    server_version = "model_server"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _HttpServer

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Every method, even ``BREW``, goes to the one dispatcher (http.server only knows ``do_*``).

        The URL parser then calls an unknown method on /v1/ malformed (400), and any other path
        gets the JSON 404, instead of http.server's HTML 501. (Real TF Serving differs here: libevent
        answers methods outside GET/POST/HEAD/PUT/DELETE/OPTIONS/PATCH with 501 before dispatching.)
        """
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self.server.enter()
        started = time.monotonic()
        status = 500
        try:
            status = self._answer()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # never a traceback to the client, never a dead server
            log.exception("Unhandled error for %s %s", self.command, self.path)
            if not self.wfile.closed:
                self._send(500, JSON_CONTENT_TYPE, b'{"error":"Internal server error"}')
        finally:
            self.server.leave()
            if self.server.closing:
                self.close_connection = True
            log.info('%s "%s %s" %d %.1f ms request_id=%s', self.client_address[0], self.command, self.path,
                     status, (time.monotonic() - started) * 1000, self.headers.get(REQUEST_ID_HEADER, "-"))

    def _answer(self) -> int:
        # Like libevent, read the body whatever the path, so a bad one is a 400 everywhere.
        try:
            body = self._read_body()
        except InvalidArgument as exc:
            self.close_connection = True  # the unread body is still on the socket
            return self._send_serving_error(exc)
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if metrics is not None and path == self.server.metrics_path:
            page, content_type = metrics.render()
            return self._send(200, content_type, page)
        if not routing.is_api_path(self.path):
            # TF Serving's net_http answers 404 when no handler claims the path (as HTML; ours is JSON).
            return self._send_serving_error(NotFound(f"Not found: {self.command} {path}"))
        response = self.server.api.handle(self.command, self.path, body)
        if metrics is not None and response.model_name:
            metrics.record_request(response.model_name, response.version, response.api, response.status_code,
                                   time.monotonic() - self._started_at)
        return self._send(response.http_status, JSON_CONTENT_TYPE, response.body)

    def parse_request(self) -> bool:
        """Reject HTTP/0.9 (no version) as libevent does: 400, then close.

        http.server would accept ``GET /path`` and then wait for headers an HTTP/0.9 client
        never sends, holding the connection until the client gives up.
        """
        self._started_at = time.monotonic()
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if len(requestline.split()) == 2:
            # What super().parse_request() sets before it answers a bad first line.
            self.command, self.requestline, self.request_version = None, requestline, self.default_request_version
            self.send_error(400, "Bad request: no HTTP version (HTTP/0.9 is not supported)")
            return False
        return super().parse_request()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            raise InvalidArgument(f"Invalid Content-Length: {length_header}") from None
        if length < 0:
            raise InvalidArgument(f"Invalid Content-Length: {length_header}")
        if length > MAX_BODY_BYTES:
            raise _body_too_large(length)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise InvalidArgument("Malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _body_too_large(total)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send_serving_error(self, exc: ServingError) -> int:
        return self._send(exc.http_status, JSON_CONTENT_TYPE, error_body(exc))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own rejections (bad request line 400, 414, 431...): same status, JSON body, close.

        Replaces its HTML page, so that every answer of the server is ``{"error": ...}``.
        """
        message = message or self.responses.get(code, ("Error",))[0]
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True  # the request was not understood, so neither is what follows it
        self._send(code, JSON_CONTENT_TYPE, error_json(message))

    def _send(self, status: int, content_type: str, body: bytes) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection or self.server.closing:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug(format, *args)  # our own access line is written in _dispatch


def _body_too_large(size: int) -> InvalidArgument:
    """400 for a body over MAX_BODY_BYTES.

    TF Serving has no such limit (it leaves libevent's max_body_size unlimited, so libevent's 413
    never happens there), hence no status to copy: keep INVALID_ARGUMENT and say what went wrong.
    """
    return InvalidArgument(f"Request body too large: {size} bytes exceeds the limit of {MAX_BODY_BYTES} bytes "
                           f"({MAX_BODY_BYTES >> 20} MiB) of this model server")


class RestServer:
    """Owns the listening socket and its accept thread.

    The constructor only binds the port (a busy port fails here, raising OSError); ``start`` listens
    and accepts. In between, connections are refused rather than queued, so a client polling a
    server that is still loading gets an immediate "connection refused", never a hung request.
    """

    def __init__(self, host: str, port: int, api: RestApi, metrics: Metrics | None, metrics_path: str):
        self._httpd = _HttpServer((host, port), api, metrics, metrics_path)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest-accept", daemon=True)
        self.address = self._httpd.server_address

    def start(self) -> None:
        """Listen and start accepting connections (OSError if the port was taken since the bind)."""
        self._httpd.server_activate()
        self._thread.start()

    def shutdown(self, grace_s: float) -> bool:
        """Stop accepting, then wait up to ``grace_s`` for in-flight requests; True if all finished."""
        self._httpd.closing = True
        if self._thread.is_alive():  # BaseServer.shutdown() waits forever for a loop that never ran
            self._httpd.shutdown()
        self._httpd.socket.close()
        finished = self._httpd.wait_idle(grace_s)
        self._httpd.server_close()
        return finished

