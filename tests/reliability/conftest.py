"""Shared real processes and helpers for the reliability suite.

Three ``python -m model_server`` processes are spawned together at session start (each imports
TensorFlow: seconds of CPU), all on 127.0.0.1 with ephemeral ports, serving a tiny classifier
exported by the real export path while they start:

* ``main``: models ``tiny`` (never touched), ``swap`` and ``versions`` (tests add versions to them);
* ``restartable``: SIGKILLed and restarted on the same port by test_faults;
* ``batching``: batching with a 1.5 s batch timeout (slow-ish requests), SIGTERMed by test_shutdown.

ONE gunicorn gateway fronts ``main`` with deliberately small, non-default limits, so tests prove
the configured value is the one enforced, not a default:

    GATEWAY_MAX_BODY_BYTES=1000000  GATEWAY_MAX_IMAGE_PIXELS=4000000
    GATEWAY_MAX_BATCH_SIZE=4        GATEWAY_BACKEND_POOL_SIZE=4
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.processes import ServerProcess, free_port, model_available, start_gateway, wait_until

MODEL = "tiny"                     # model name on the model server and route on the gateway
SWAP = "swap"                      # same model; test_hot_swap_under_load exports new versions into it
VERSIONS = "versions"              # same model; test_faults writes broken versions into it
BATCH_TIMEOUT_S = 1.5              # the batching server holds each request this long (slow-ish calls)
INPUT_SIZE = (32, 32)
CLASSES = 10
LABELS = [(f"c{i:02d}", f"class_{i}") for i in range(CLASSES)]
PREDICT = f"/v1/models/{MODEL}/predict"
MS_PREDICT = f"/v1/models/{MODEL}:predict"
# Security has its own tests; here the limiter must never be what answers.
RATE_LIMITS = "default=1000000/minute"
MAX_BODY_BYTES = 1_000_000
MAX_IMAGE_PIXELS = 4_000_000
MAX_BATCH_SIZE = 4
POOL_SIZE = 4
LIMITS = {"GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "GATEWAY_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
          "GATEWAY_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE), "GATEWAY_BACKEND_POOL_SIZE": str(POOL_SIZE)}


# --- images and models --------------------------------------------------------------------------

def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "PNG", seed: int = 0, **save) -> bytes:
    """A random RGB image file of ``size`` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **save)
    return out.getvalue()


def export_version(base_path: Path, version: int, seed: int) -> Path:
    """Export the tiny classifier as ``base_path/<version>`` through the real export path."""
    from tests.support.tiny_models import export_tiny_classifier

    return export_tiny_classifier(base_path, version, input_size=INPUT_SIZE, classes=CLASSES, seed=seed)


def write_gateway_models(path: Path, routes: dict[str, tuple[str, str]], labels: Path) -> Path:
    """A gateway MODELS_CONFIG: route -> (model server URL, model name), all tiny 32x32 classifiers."""
    tables = "".join(
        f'[models.{route}]\nmodel_server_url = "{url}"\nmodel_name = "{model}"\n'
        f"input_size = [{INPUT_SIZE[0]}, {INPUT_SIZE[1]}]\nlabels = \"{labels}\"\n\n"
        for route, (url, model) in routes.items())
    path.write_text(tables)
    return path


@dataclass
class Stack:
    """A model server and a gateway in front of it."""

    model_server: ServerProcess
    gateway: ServerProcess


@dataclass
class ModelServers:
    """The suite's model server processes, spawned together at session start (see ``launched``)."""

    root: Path
    main: ServerProcess          # serves MODEL (static), SWAP and VERSIONS (mutated by tests)
    restartable: ServerProcess   # serves MODEL; test_faults SIGKILLs and restarts it on its port
    batching: ServerProcess      # serves MODEL with 1.5 s batch timeout; test_shutdown SIGTERMs it
    options: dict[str, dict[str, Any]]  # what each was started with: start(**options[key]) restarts it
    start: Callable[..., ServerProcess]  # the model_server_factory fixture

    def base(self, model: str) -> Path:
        return self.root / model


def stop_all(servers: list[ServerProcess]) -> None:
    """SIGTERM every server first, then wait for each: shutdowns overlap instead of adding up."""
    for server in servers:
        if server.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.popen.pid, signal.SIGTERM)
    for server in servers:
        server.stop()


def ready(server: ServerProcess, model: str = MODEL, timeout: float = 180) -> ServerProcess:
    """Wait until ``model`` is AVAILABLE on ``server`` (fails with the server log otherwise)."""
    wait_until(server, f"/v1/models/{model}", timeout, model_available(model))
    return server


def copy_version(source: Path, base_path: Path, version: int) -> Path:
    """Copy a version directory atomically (hidden staging dir + rename), as a deploy tool would."""
    staging = base_path / f".copy-{version}"
    shutil.copytree(source, staging)
    return staging.rename(base_path / str(version))


@pytest.fixture(scope="session")
def launched(tmp_path_factory, model_server_factory) -> Iterator[ModelServers]:
    """Spawn every model server FIRST (each imports TensorFlow: many seconds), then export the model
    while they start: a model server with an empty base path simply waits for a version to appear."""
    root = tmp_path_factory.mktemp("reliability")
    for name in (MODEL, SWAP, VERSIONS):
        (root / name).mkdir()
    (root / "labels.txt").write_text("".join(f"{wnid}\t{label}\n" for wnid, label in LABELS))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
        for name in (MODEL, SWAP, VERSIONS)) + "}\n")
    batching = root / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: %d }\n"
                        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"
                        % int(BATCH_TIMEOUT_S * 1e6))
    single = (f"--model_name={MODEL}", f"--model_base_path={root / MODEL}")
    ports = {key: free_port() for key in ("main", "restartable", "batching")}
    extra_args = {
        # No load retries: a broken version is reported END at once instead of after minutes.
        "main": (f"--model_config_file={config}", "--max_num_load_retries=0"),
        "restartable": single,
        "batching": (*single, "--enable_batching", f"--batching_parameters_file={batching}"),
    }
    # No waiting here (wait=False): the model is exported below while they start; ``ready`` waits.
    options = {key: {"port": ports[key], "extra_args": extra_args[key], "poll_wait_seconds": 1, "wait": False}
               for key in extra_args}
    servers = {key: model_server_factory(**options[key]) for key in options}
    launched = ModelServers(root, servers["main"], servers["restartable"], servers["batching"], options,
                            model_server_factory)
    try:
        export_version(root / MODEL, 1, seed=1)
        for name in (SWAP, VERSIONS):
            copy_version(root / MODEL / "1", root / name, 1)
        yield launched
    finally:
        # The current processes: test_faults replaces ``restartable`` with its restarted one.
        stop_all([*servers.values(), launched.main, launched.restartable, launched.batching])


@pytest.fixture(scope="session")
def model_dir(launched) -> Path:
    return launched.root


@pytest.fixture(scope="session")
def model_server(launched) -> ServerProcess:
    return ready(launched.main)


def gateway_env(models_toml: Path, **settings: str) -> dict[str, str]:
    return {"MODELS_CONFIG": str(models_toml), "GATEWAY_RATE_LIMITS": RATE_LIMITS, **LIMITS, **settings}


@pytest.fixture(scope="session")
def gateway(model_dir, model_server) -> Iterator[ServerProcess]:
    # "imageclassifier" is the tutorial's route (/imageclassifier/predict/), on the same tiny model.
    toml = write_gateway_models(model_dir / "gateway.toml", {
        MODEL: (model_server.url, MODEL), "imageclassifier": (model_server.url, MODEL),
        SWAP: (model_server.url, SWAP), VERSIONS: (model_server.url, VERSIONS)}, model_dir / "labels.txt")
    with start_gateway(gateway_env(toml), threads=16, wait_path="/readyz") as server:
        yield server


@pytest.fixture(scope="session")
def stack(model_server, gateway) -> Stack:
    return Stack(model_server, gateway)


@pytest.fixture(scope="session")
def good_png() -> bytes:
    return image_bytes((40, 30), "PNG", seed=7)


# --- assertions ---------------------------------------------------------------------------------

def assert_gateway_error(response: requests.Response, status: int, fragment: str) -> dict:
    """The gateway's error contract: status, JSON ``{"error", "request_id"}``, id echoed in the header."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    assert fragment in body["error"], body["error"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def assert_model_server_error(response: requests.Response, status: int, fragment: str) -> dict:
    """TF Serving's error contract: status and JSON ``{"error"}``."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"]
    return body


def predict_ok(gateway_url: str, image: bytes, route: str = MODEL, timeout: float = 10) -> dict:
    """One good prediction through the gateway; returns its JSON body."""
    response = requests.post(f"{gateway_url}/v1/models/{route}/predict", data=image,
                             headers={"Content-Type": "image/png"}, timeout=timeout)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 5 and body["model"] == route
    assert {p["wnid"] for p in body["predictions"]} <= {wnid for wnid, _ in LABELS}, body
    return body


def assert_healthy(stack: Stack, image: bytes) -> None:
    """Both processes alive, gateway live, a good predict works, the model is AVAILABLE on both."""
    assert stack.gateway.alive() and stack.model_server.alive()
    assert requests.get(stack.gateway.url + "/healthz", timeout=5).status_code == 200
    predict_ok(stack.gateway.url, image)
    status = requests.get(f"{stack.model_server.url}/v1/models/{MODEL}", timeout=5).json()
    assert any(v["state"] == "AVAILABLE" for v in status["model_version_status"]), status
    assert requests.get(f"{stack.gateway.url}/v1/models/{MODEL}", timeout=5).json()["state"] == "AVAILABLE"


# --- load -----------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """One client request: when it started, what came back (or the exception)."""

    started: float
    status: int | None
    body: dict | None = None
    error: str | None = None


def run_clients(n: int, call: Callable[[requests.Session], requests.Response], stop: threading.Event,
                max_requests: int | None = None) -> tuple[list[threading.Thread], list[list[Outcome]]]:
    """Start ``n`` threads, each calling ``call`` in a loop on its own session until ``stop``."""
    results: list[list[Outcome]] = [[] for _ in range(n)]

    def loop(mine: list[Outcome]) -> None:
        with requests.Session() as session:
            while not stop.is_set() and (max_requests is None or len(mine) < max_requests):
                started = time.monotonic()
                try:
                    response = call(session)
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    mine.append(Outcome(started, response.status_code, body))
                except requests.RequestException as exc:
                    mine.append(Outcome(started, None, error=repr(exc)))

    threads = [threading.Thread(target=loop, args=(results[i],), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, results

