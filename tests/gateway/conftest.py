"""Fixtures for the gateway tests.

Two tiers, as in httpx's own tests: handler-level tests use a Flask test client (``make_app``)
against either nothing (a closed port), a tiny local HTTP server standing in for a broken upstream
(``upstream``: slow, garbage, errors), or the real model server; end-to-end tests use ONE real
``python -m model_server`` serving two tiny exported models and ONE real gunicorn gateway.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flask_server.app import create_app
from flask_server.request_id import REQUEST_ID_HEADER
from tests.support.processes import free_port, model_available, start_gateway, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGES = REPO_ROOT / "test_images"
# Limits apply only with API keys (security.py); tests that add keys must not be throttled by the
# production default (60/minute per key). security has its own tests.
TEST_RATE_LIMITS = "default=100000/minute"
TINY = "tiny"                 # 32x32 input, 10 classes, labels file, untrained weights, label "stable"
TINY_1000 = "tiny1000"        # 48x48 input, 1000 classes, ImageNet labels, "fixture" weights
TINY_SIZE = (32, 32)
TINY_1000_SIZE = (48, 48)
PREDICT = "/v1/models/imageclassifier/predict"
STABLE_LABEL = "stable"  # a version label of the tiny model on the session model server
TINY_LABELS = [(f"c{i:02d}", f"class_{i}") for i in range(10)]


def assert_error(response, status: int, message: str) -> dict:
    """The error body shape every failure shares: {"error", "request_id"} matching the header."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "request_id"}
    assert message in body["error"]
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER]
    return body


def closed_port_url() -> str:
    """An http URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def make_app(tmp_path) -> Callable[..., object]:
    """Build a gateway app from settings (env names); defaults point at a closed port."""
    def build(**settings):
        values = {"MODEL_SERVER_URL": closed_port_url(), "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS, **settings}
        return create_app(values)
    return build


@pytest.fixture
def client(make_app):
    """A test client of a gateway whose model server is unreachable (enough for input errors)."""
    return make_app().test_client()


def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "PNG", seed: int = 0) -> bytes:
    """A small random RGB image file (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="session")
def png() -> bytes:
    return image_bytes()


@pytest.fixture(scope="session")
def photo() -> bytes:
    return (TEST_IMAGES / "chelsea.jpg").read_bytes()


# --- a stand-in for a misbehaving upstream ---------------------------------------------------------

@dataclass
class StubReply:
    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class Upstream:
    """A local HTTP server whose replies a test chooses: ``upstream.reply = lambda method, path: StubReply(...)``."""

    server: ThreadingHTTPServer
    reply: Callable[[str, str], StubReply] = lambda method, path: StubReply()
    requests: list[tuple[str, str, dict]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _stub_handler(upstream_ref: list[Upstream]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            upstream = upstream_ref[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            upstream.requests.append((self.command, self.path, dict(self.headers)))
            reply = upstream.reply(self.command, self.path)
            time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # the timeout tests hang up mid-reply on purpose; no traceback for that


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A fake upstream for 502/504 cases; it stands in for a broken server, not for ours."""
    ref: list[Upstream] = []
    server = _QuietServer(("127.0.0.1", 0), _stub_handler(ref))
    ref.append(Upstream(server))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield ref[0]
    server.shutdown()
    server.server_close()


def status_reply(version: int = 1) -> bytes:
    """A TF Serving model status body with one AVAILABLE version."""
    return json.dumps({"model_version_status": [
        {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}).encode()


#: Two scores for one image, the stub upstream's default predict reply.
PREDICTIONS = json.dumps({"predictions": [[0.1, 0.9]]}).encode()


def routed(status=None, metadata=b'{"model_spec": {"version": "1"}, "metadata": {}}', predict=None):
    """An upstream reply function: a healthy model status and metadata unless overridden."""
    def reply(method, path):
        if path.endswith(":predict"):
            return predict or StubReply(body=PREDICTIONS)
        if path.endswith("/metadata"):
            return StubReply(body=metadata)
        return status or StubReply(body=status_reply(1))
    return reply


# --- the real servers -------------------------------------------------------------------------------

@dataclass
class TinyModels:
    root: Path
    paths: dict[str, Path]
    model_config_file: Path
    gateway_models_toml: Path


def write_model_config(path: Path, models: dict[str, Path], labels: dict[str, dict[str, int]] | None = None) -> None:
    """A TF Serving model config file (text proto) listing ``name -> base path`` and version labels."""
    def entry(name: str, base: Path) -> str:
        version_labels = "".join(f' version_labels {{ key: "{label}" value: {version} }}'
                                 for label, version in (labels or {}).get(name, {}).items())
        return f'  config {{ name: "{name}" base_path: "{base.resolve()}" model_platform: "tensorflow"{version_labels} }}\n'
    path.write_text(f"model_config_list {{\n{''.join(entry(n, b) for n, b in models.items())}}}\n")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Two tiny classifiers exported through the real export path, plus the config files for both servers."""
    from scripts.export_saved_model import export_keras_model
    from tests.support.tiny_models import build_tiny_classifier, export_tiny_classifier

    root = tmp_path_factory.mktemp("gateway-models")
    paths = {TINY: root / TINY, TINY_1000: root / TINY_1000}
    export_tiny_classifier(paths[TINY], 1, input_size=TINY_SIZE, classes=10, seed=1)
    model = build_tiny_classifier(TINY_1000_SIZE, 1000, seed=2, name=TINY_1000)
    export_keras_model(model, paths[TINY_1000], 1, info={"weights": "fixture", "preprocessing": "tf"},
                       log=lambda _msg: None)
    model_config = root / "models.config"
    write_model_config(model_config, paths, labels={TINY: {STABLE_LABEL: 1}})
    (root / "tiny_labels.txt").write_text("".join(f"{wnid}\t{label}\n" for wnid, label in TINY_LABELS))
    toml = root / "gateway_models.toml"
    toml.write_text(f"""
[models.{TINY}]
model_name = "{TINY}"
input_size = [{TINY_SIZE[0]}, {TINY_SIZE[1]}]
labels = "tiny_labels.txt"

[models.tiny_json]
model_name = "{TINY}"
signature = "serving_default"
input_size = [{TINY_SIZE[0]}, {TINY_SIZE[1]}]
labels = "tiny_labels.txt"
top_k = 3

[models.imageclassifier]
model_name = "{TINY_1000}"
input_size = [{TINY_1000_SIZE[0]}, {TINY_1000_SIZE[1]}]
""")
    return TinyModels(root, paths, model_config, toml)


@pytest.fixture(scope="session")
def model_server(tiny_models, model_server_factory):
    """ONE real model server serving both tiny models, over REST and gRPC (``extra["grpc_url"]``)."""
    grpc_port = free_port()
    with model_server_factory(extra_args=[f"--model_config_file={tiny_models.model_config_file}",
                                          f"--port={grpc_port}"], wait_for=TINY) as server:
        wait_until(server, f"/v1/models/{TINY_1000}", 60, model_available(TINY_1000))
        server.extra["grpc_url"] = f"grpc://127.0.0.1:{grpc_port}"
        yield server


@pytest.fixture(scope="session")
def gateway_env(model_server, tiny_models) -> dict[str, str]:
    return {"MODEL_SERVER_URL": model_server.url, "MODELS_CONFIG": str(tiny_models.gateway_models_toml),
            "GATEWAY_RATE_LIMITS": TEST_RATE_LIMITS}


@pytest.fixture(scope="session")
def served_app(gateway_env):
    """An in-process gateway app in front of the real model server."""
    return create_app(gateway_env)


@pytest.fixture
def served_client(served_app):
    return served_app.test_client()


@pytest.fixture(scope="session")
def gunicorn_gateway(gateway_env):
    """ONE real gunicorn gateway in front of the real model server, ready (readyz 200)."""
    with start_gateway(gateway_env, wait_path="/readyz") as server:
        yield server
