"""Start the model server and the Flask gateway together, show their progress, stop both cleanly.

The model server is the real ``tensorflow_model_server`` when it is on PATH, otherwise our
``python -m model_server`` with the same flags. The gateway is ``flask_server.app:create_app()``
under gunicorn with ``flask_server/gunicorn.conf.py``, pointed at the model server through
``MODEL_SERVER_URL`` (``MODELS_CONFIG`` passes through when set). Both children run in their own
process groups, so Ctrl-C reaches this script only and it stops them in order: SIGTERM, a bounded
wait, then SIGKILL.

Before starting anything it checks that every port it will listen on is free, and otherwise exits 1
with one line per busy port: who holds it (pid and command) and the flag or make variable that
picks another (scripts/port_check.py). A readiness answer counts only from the process it started.
``--check-ports`` runs that check alone (same flags, no model needed, nothing started) and exits 0
or 1: ``make run`` calls it before it downloads or exports anything.

Stop with ``q`` / ``exit`` + Enter, Ctrl-C or SIGTERM. With ``--no-input`` (or when stdin is not a
terminal and reaches end of file, e.g. ``< /dev/null``) it runs until SIGTERM or Ctrl-C.
Once both are ready, a server that exits is reported (exit code, last log lines) and restarted with
backoff while the other keeps running (scripts/supervisor.py); with ``--no-restart`` the other one
is stopped instead and the exit code is 1. A server that fails during the first start-up is never
retried: that is a configuration problem, and the exit code is 1.

Several models from one model server: repeated ``--model NAME=BASE_PATH`` or a TF Serving
``--model-config-file``; auto_cmd writes the model server's model config file and the gateway's
``MODELS_CONFIG`` with a route per model, ``/v1/models/<name lowercased>/predict``
(scripts/model_list.py). One model (``--model-name``, default ImageClassifier) is served at its
lowercased name too: ``/v1/models/imageclassifier/predict``, plus the tutorial's
``/imageclassifier/predict/``.

Typical usage (``make run`` does this after exporting a model)::

    .venv/bin/python scripts/auto_cmd.py --model-base-path my_image_classifier
    .venv/bin/python scripts/auto_cmd.py --model-base-path models/MobileNetV2 --model-name MobileNetV2
    .venv/bin/python scripts/auto_cmd.py --model InceptionV3=models/InceptionV3 --model MobileNetV2=models/MobileNetV2
    .venv/bin/python scripts/auto_cmd.py --host 0.0.0.0   # reachable from other machines
    make run MODEL_SERVER_ARGS="--enable_batching --batching_parameters_file=batching.txt"

Starting, waiting for and stopping the servers, and their command lines, live in scripts/processes.py,
shared with ``python -m bench`` and the tests, so both measure and test exactly what ``make run`` starts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/auto_cmd.py`: make `scripts.` importable without pip -e
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.model_list import chosen_models, missing_versions, parse_model_option, write_serving_files
from scripts.port_check import PortUse, busy_ports
from scripts.processes import (DEFAULT_POLL_WAIT_SECONDS, REPO_ROOT, STARTUP_TIMEOUT, ChildDied, ChildProcess,
                               StopRequested, gateway_command, gateway_env, model_server_command,
                               wait_for_http_ok, wait_for_models)
from scripts.processes import GATEWAY_APP, GUNICORN_CONF  # noqa: F401 (tests/test_deploy.py reads them here)
from scripts.supervisor import Server, Supervisor
from flask_server.model_config import DEFAULT_ROUTE
from serving_contract.export import DEFAULT_MODEL_NAME

DEFAULT_MODEL_BASE_PATH = REPO_ROOT / "my_image_classifier"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_REST_API_PORT = 9000
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port in its tutorials
DEFAULT_GATEWAY_PORT = 5000
QUIT_WORDS = frozenset({"q", "quit", "exit"})
SAMPLE_IMAGE = "test_images/chelsea.jpg"
WATCH_INTERVAL_S = 0.5
EXIT_PORT_BUSY = 1
EXIT_NO_MODEL = 2


def client_host(host: str) -> str:
    """Where a local client connects when a server binds ``host`` (0.0.0.0 means all interfaces)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def sample_commands(gateway_url: str, model_server_url: str, model_name: str, routes: Sequence[str] = (),
                    grpc_address: str | None = None) -> list[str]:
    """Ready-to-paste requests against both servers (``routes``: the gateway's, default the tutorial's;
    and the gRPC port when it is on)."""
    commands = [f".venv/bin/python flask_server/flask_sample_request.py -i {SAMPLE_IMAGE} --url {gateway_url}"
                + (f" --model {route}" if route != DEFAULT_ROUTE else "") for route in routes or [DEFAULT_ROUTE]]
    commands += [
        f".venv/bin/python scripts/serving_sample_request.py -i {SAMPLE_IMAGE} --url {model_server_url} "
        f"--model {model_name}",
    ]
    if grpc_address:
        commands.append(f".venv/bin/python scripts/serving_sample_request.py -i {SAMPLE_IMAGE} --grpc {grpc_address} "
                        f"--model {model_name}")
    return [*commands, f"curl {gateway_url}/readyz"]


def _watch_stdin(stop: threading.Event) -> None:
    """Set ``stop`` on a quit word. EOF means "no keyboard" (stdin is /dev/null): keep running."""
    for line in sys.stdin:
        if line.strip().lower() in QUIT_WORDS:
            stop.set()
            return


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path, default=DEFAULT_MODEL_BASE_PATH,
                        help="directory of numeric SavedModel versions (default: <repo>/my_image_classifier)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help="model name in URLs (%(default)s); the gateway route is its lowercased form")
    parser.add_argument("--model", action="append", type=parse_model_option, default=[], metavar="NAME=BASE_PATH",
                        help="serve this model (repeat for several; replaces --model-name/--model-base-path); "
                             "each gets the gateway route /v1/models/<name lowercased>/predict")
    parser.add_argument("--model-config-file", type=Path,
                        help="a TF Serving model config file (text protobuf) listing the models to serve")
    parser.add_argument("--rest-api-port", type=int, default=DEFAULT_REST_API_PORT,
                        help="model server REST port (%(default)s)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help="model server gRPC port, TF Serving's PredictionService (%(default)s; 0 turns it off)")
    parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT, help="gateway port (%(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address both servers bind (%(default)s; 0.0.0.0 exposes them to other machines). "
                             "The real tensorflow_model_server ignores it and listens on all interfaces")
    parser.add_argument("--gateway-workers", type=int, default=None,
                        help="gunicorn worker processes (default: GATEWAY_WORKERS or 2, see gunicorn.conf.py)")
    parser.add_argument("--poll-wait-seconds", type=int, default=DEFAULT_POLL_WAIT_SECONDS,
                        help="how often the model server looks for new versions (%(default)s s)")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT,
                        help="seconds each server may take to become ready (%(default)s)")
    parser.add_argument("--no-restart", action="store_true",
                        help="when a server exits, stop the other one and exit 1 instead of restarting it")
    parser.add_argument("--no-input", action="store_true",
                        help="do not read the keyboard; run until SIGTERM or Ctrl-C")
    parser.add_argument("--check-ports", action="store_true",
                        help="only check that the ports are free (exit 0, or 1 with the busy-port line); start nothing")
    parser.add_argument("--model-server-args", default=os.environ.get("MODEL_SERVER_ARGS", ""),
                        help="more model server flags, one shell-quoted string, e.g. \"--enable_batching "
                             "--tensorflow_intra_op_parallelism=1\" (default: MODEL_SERVER_ARGS)")
    return parser.parse_args(argv)


def port_uses(args: argparse.Namespace) -> list[PortUse]:
    """Every port this run will listen on, with the flag and make variable that change it."""
    uses = [PortUse(args.rest_api_port, "model server REST API", "--rest-api-port", "REST_API_PORT")]
    if args.grpc_port:  # 0 turns gRPC off
        uses.append(PortUse(args.grpc_port, "model server gRPC API", "--grpc-port", "GRPC_PORT"))
    return [*uses, PortUse(args.gateway_port, "gateway", "--gateway-port", "GATEWAY_PORT")]


def report_busy_ports(args: argparse.Namespace) -> int:
    """The pre-flight check: 0 when every port is free, else EXIT_PORT_BUSY after one line per problem."""
    problems = busy_ports(args.host, port_uses(args))
    if problems:
        print("\n".join(problems), file=sys.stderr, flush=True)
        return EXIT_PORT_BUSY
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_ports:
        return report_busy_ports(args)
    sys.stdout.reconfigure(line_buffering=True)  # progress must show up at once, even through a pipe
    try:
        models = chosen_models(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    missing = missing_versions(models)
    for model in missing:
        print(f"error: no numeric model version under {model.base_path}; export one first "
              f"(make model, or scripts/export_saved_model.py --base-path {model.base_path})", file=sys.stderr)
    if missing:
        return EXIT_NO_MODEL
    # Before anything starts: a busy port would otherwise surface only after a model load, or
    # worse, another program's answer would be taken for our server's.
    code = report_busy_ports(args)
    if code:
        return code
    # The model server's model config file and the gateway's MODELS_CONFIG live as long as this run.
    config_dir = tempfile.TemporaryDirectory(prefix="auto_cmd-")
    model_config_file, gateway_config_file = write_serving_files(models, Path(config_dir.name))
    several = bool(args.model or args.model_config_file)
    if args.model_config_file:
        model_config_file = args.model_config_file.resolve()  # the user's own: reloads and policies stay theirs

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame) -> None:
        # Only set the event: the waits below poll it. Raising from here could unwind through a
        # lock held inside subprocess (Popen's waitpid lock) and hang the shutdown on it.
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    ms_url = f"http://{client_host(args.host)}:{args.rest_api_port}"
    gw_url = f"http://{client_host(args.host)}:{args.gateway_port}"
    grpc_address = f"{client_host(args.host)}:{args.grpc_port}" if args.grpc_port else None
    # One model keeps the tutorial's --model_name/--model_base_path command line.
    model_flags = [f"--model_config_file={model_config_file}"] if several else []
    ms_args = model_server_command(None if several else models[0].name, None if several else models[0].base_path,
                                   args.rest_api_port, args.host, args.poll_wait_seconds,
                                   extra_args=[*model_flags, *shlex.split(args.model_server_args)],
                                   grpc_port=args.grpc_port)
    gw_args = gateway_command(f"{args.host}:{args.gateway_port}", args.gateway_workers)

    def progress(name: str) -> Callable[[str, float], None]:
        return lambda state, elapsed: print(f"[{name}] {state} after {elapsed:.1f} s", flush=True)

    # Both start at once (the gateway needs no model to boot); readiness is checked in order.
    servers = [
        Server("model_server", lambda: ChildProcess("model_server", ms_args),
               lambda child, stop: wait_for_models(ms_url, [model.name for model in models], child,
                                                   args.startup_timeout, progress("model_server"), stop)),
        Server("gateway", lambda: ChildProcess("gateway", gw_args, env=gateway_env(ms_url, gateway_config_file)),
               lambda child, stop: wait_for_http_ok(f"{gw_url}/readyz", child, args.startup_timeout,
                                                    progress("gateway"), stop),
               wait_ready_again=lambda child, stop: wait_for_http_ok(f"{gw_url}/healthz", child,
                                                                     args.startup_timeout, None, stop)),
    ]
    supervisor = Supervisor(servers, stop, restart=not args.no_restart)
    code = 0
    try:
        print(f"starting model server: {' '.join(ms_args)}", flush=True)
        print(f"starting gateway:      {' '.join(gw_args)}", flush=True)
        ready = supervisor.start_all()
        ms, gw = (server.child.pid for server in servers)
        print(f"\nready: model server {ms_url} (pid {ms}, {ready['model_server']:.1f} s), "
              f"gateway {gw_url} (pid {gw}, {ready['gateway']:.1f} s)")
        for model in models:
            print(f"  {model.name}: POST {gw_url}/v1/models/{model.route}/predict "
                  f"(model status: {ms_url}/v1/models/{model.name})")
        if grpc_address:
            print(f"  model server gRPC (TF Serving's PredictionService): {grpc_address}")
        routes = [model.route for model in models]
        print("  try:\n    " + "\n    ".join(sample_commands(gw_url, ms_url, models[0].name, routes, grpc_address)))
        print("a server that exits is " + ("not restarted (--no-restart)" if args.no_restart
                                          else "restarted with backoff (1 s doubling to 30 s)"))
        if args.no_input:
            print("running until SIGTERM or Ctrl-C", flush=True)
        else:
            print("type q + Enter (or Ctrl-C) to stop", flush=True)
            threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
        while not stop.wait(WATCH_INTERVAL_S):
            watched = supervisor.watch()
            if watched is not None:
                code = watched
                break
    except StopRequested:
        pass  # reported below, with the signal's name
    except (ChildDied, TimeoutError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if received:
            print(f"\n{received[0]} received", flush=True)
        print("stopping...", flush=True)
        supervisor.stop_all()  # gateway first, so it stops taking requests before its backend goes away
        config_dir.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
