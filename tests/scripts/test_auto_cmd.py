"""scripts/auto_cmd.py: both servers start, answer, and stop cleanly on SIGTERM or `q`.

End-to-end with real processes (a tiny exported model, free ports on 127.0.0.1), plus fast checks
of the pieces that need no servers.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from scripts import auto_cmd
from tests.support.processes import REPO_ROOT, free_port, held_port, port_closed
from tests.support.tiny_models import export_tiny_classifier

READY_TIMEOUT = 90.0
EXIT_TIMEOUT = 40.0  # auto_cmd's own bound is STOP_TIMEOUT per child; clean stops take ~2 s


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model base path, MODELS_CONFIG) for a tiny classifier served under the default names."""
    root = tmp_path_factory.mktemp("auto_cmd")
    base_path = root / auto_cmd.DEFAULT_MODEL_NAME
    export_tiny_classifier(base_path, 1)
    (root / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(10)))
    config = root / "models.toml"
    config.write_text('[models.imageclassifier]\ninput_size = [32, 32]\nlabels = "labels.txt"\n')
    return base_path, config


class AutoCmd:
    """auto_cmd.py running in a subprocess, its output collected line by line."""

    def __init__(self, base_path: Path, models_config: Path | None, extra: list[str], stdin,
                 ms_port: int | None = None, gw_port: int | None = None, grpc_port: int | None = None) -> None:
        self.ms_port, self.gw_port = ms_port or free_port(), gw_port or free_port()
        self.grpc_port = grpc_port or free_port()
        args = [sys.executable, "scripts/auto_cmd.py", "--model-base-path", str(base_path),
                "--rest-api-port", str(self.ms_port), "--gateway-port", str(self.gw_port),
                "--grpc-port", str(self.grpc_port),
                "--gateway-workers", "1", *extra]
        env = {key: value for key, value in os.environ.items() if key != "MODELS_CONFIG"}
        if models_config is not None:  # else auto_cmd writes a route per model itself
            env["MODELS_CONFIG"] = str(models_config)
        self.popen = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                assert self.popen.poll() is None, f"auto_cmd exited early:\n{self.output()}"
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return "".join(self.lines)[-6000:]

    def pid_of(self, name: str) -> int:
        """The pid auto_cmd last reported for the server ``name`` ("[gateway] started ..., pid N")."""
        started = [line for line in self.lines if line.startswith(f"[{name}] started")]
        assert started, self.output()
        return int(started[-1].rsplit("pid ", 1)[1])

    def __enter__(self) -> AutoCmd:
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(EXIT_TIMEOUT)
        self._reader.join(5)  # it reads to EOF, then the pipes can be closed
        for pipe in (self.popen.stdout, self.popen.stdin):
            if pipe is not None:
                pipe.close()


def check_both_servers_answer(run: AutoCmd) -> None:
    status = requests.get(f"http://127.0.0.1:{run.ms_port}/v1/models/{auto_cmd.DEFAULT_MODEL_NAME}", timeout=5)
    assert status.status_code == 200
    assert any(v["state"] == "AVAILABLE" for v in status.json()["model_version_status"])
    assert requests.get(f"http://127.0.0.1:{run.gw_port}/readyz", timeout=5).status_code == 200
    # the model server's gRPC port serves the same model (TF Serving's ModelService.GetModelStatus)
    from flask_server.grpc_transport import GrpcTransport

    transport = GrpcTransport(f"grpc://127.0.0.1:{run.grpc_port}", (2.0, 10.0))
    try:
        assert "AVAILABLE" in [v["state"] for v in transport.model_status(auto_cmd.DEFAULT_MODEL_NAME)]
    finally:
        transport.close()


def check_stopped_cleanly(run: AutoCmd) -> None:
    assert run.popen.wait(EXIT_TIMEOUT) == 0, run.output()
    assert port_closed(run.ms_port) and port_closed(run.gw_port) and port_closed(run.grpc_port), \
        "a server outlived auto_cmd"
    assert "[model_server] stopped" in run.output() and "[gateway] stopped" in run.output()


@pytest.mark.e2e
def test_runs_until_sigterm_then_stops_both(tiny_model):
    with AutoCmd(*tiny_model, ["--no-input"], stdin=subprocess.DEVNULL) as run:
        ready = run.wait_for_line("ready:", READY_TIMEOUT)
        assert f"http://127.0.0.1:{run.gw_port}" in ready
        grpc_line = run.wait_for_line("  model server gRPC", 10)
        assert f"gRPC (TF Serving's PredictionService): 127.0.0.1:{run.grpc_port}" in grpc_line
        run.wait_for_line("running until SIGTERM", 10)
        assert f"serving_sample_request.py -i test_images/chelsea.jpg --grpc 127.0.0.1:{run.grpc_port}" in run.output()
        # test that progress and the ready-to-paste sample request are shown
        assert "[model_server] AVAILABLE after" in run.output()
        check_both_servers_answer(run)
        # test that the printed gateway sample request works as pasted
        sample = next(line.strip() for line in run.lines if "flask_sample_request.py -i test_images/chelsea.jpg" in line)
        pasted = subprocess.run(sample, shell=True, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        run.popen.send_signal(signal.SIGTERM)
        check_stopped_cleanly(run)


@pytest.mark.e2e
def test_model_server_args_reach_the_model_server(tiny_model, tmp_path):
    # test that flags given to auto_cmd (as `make run MODEL_SERVER_ARGS=...` does) configure the model
    # server it starts: batching with max_batch_size 1 rejects a two-image request, one image passes
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n")
    with AutoCmd(*tiny_model, ["--no-input", "--model-server-args", f"--enable_batching --batching_parameters_file={params}"],
                  stdin=subprocess.DEVNULL) as run:
        run.wait_for_line("ready:", READY_TIMEOUT)
        url = f"http://127.0.0.1:{run.ms_port}/v1/models/{auto_cmd.DEFAULT_MODEL_NAME}:predict"
        image = [[[0.0] * 3] * 32] * 32
        two = requests.post(url, json={"instances": [image, image]}, timeout=30)
        assert two.status_code == 400 and "larger than maximum input batch size 1" in two.json()["error"], two.text
        assert requests.post(url, json={"instances": [image]}, timeout=30).status_code == 200


@pytest.mark.e2e
def test_sigterm_during_start_up_and_again_while_stopping(tiny_model):
    # test that a stop asked for while the model is still loading unwinds the start-up wait, and that
    # a second SIGTERM while stopping does not abort the clean stop (the handler only sets an event)
    with AutoCmd(*tiny_model, ["--no-input"], stdin=subprocess.DEVNULL) as run:
        run.wait_for_line("starting gateway", READY_TIMEOUT)
        run.popen.send_signal(signal.SIGTERM)
        run.wait_for_line("stopping...", 10)
        run.popen.send_signal(signal.SIGTERM)
        check_stopped_cleanly(run)
        assert "SIGTERM received" in run.output()


@pytest.mark.e2e
def test_q_on_stdin_stops_both(tiny_model):
    with AutoCmd(*tiny_model, [], stdin=subprocess.PIPE) as run:
        run.wait_for_line("ready:", READY_TIMEOUT)
        check_both_servers_answer(run)
        # test that an unrelated line is ignored and `q` stops everything
        run.popen.stdin.write("hello\n")
        run.popen.stdin.flush()
        time.sleep(0.5)
        assert run.popen.poll() is None
        run.popen.stdin.write("q\n")
        run.popen.stdin.flush()
        check_stopped_cleanly(run)


PREDICT_PATH = "/v1/models/imageclassifier/predict"
REQUEST_BOUND = 5.0  # no request may hang: each one is given this long at most


def predict_status(run: AutoCmd, timeout: float = REQUEST_BOUND) -> int:
    photo = (REPO_ROOT / auto_cmd.SAMPLE_IMAGE).read_bytes()
    response = requests.post(f"http://127.0.0.1:{run.gw_port}{PREDICT_PATH}", data=photo,
                             headers={"Content-Type": "image/jpeg"}, timeout=timeout)
    if response.status_code != 200:
        assert response.json()["error"], response.text  # an error is always JSON with a message
    return response.status_code


def statuses_until_200(run: AutoCmd, within: float) -> list[int]:
    """Predict statuses, one every 0.25 s, up to and including the first 200 (fails after ``within`` s)."""
    seen: list[int] = []
    deadline = time.monotonic() + within
    while not seen or seen[-1] != 200:
        assert time.monotonic() < deadline, f"no 200 after {within} s: {seen}\n{run.output()}"
        seen.append(predict_status(run))
        time.sleep(0.25)
    return seen


@pytest.mark.e2e
def test_killed_model_server_gives_503_then_recovers(tiny_model):
    with AutoCmd(*tiny_model, ["--no-input"], stdin=subprocess.DEVNULL) as run:
        run.wait_for_line("running until SIGTERM", READY_TIMEOUT)
        assert predict_status(run) == 200
        gateway_pid, old_pid = run.pid_of("gateway"), run.pid_of("model_server")
        os.kill(old_pid, signal.SIGKILL)
        # test that clients get a JSON 503 at once (not connection refused, not a hang)...
        assert predict_status(run, timeout=2.0) == 503
        # ...the exit is reported with its code, the model server comes back by itself and the
        # gateway, never restarted, answers 200 again
        run.wait_for_line("[model_server] exited unexpectedly with code -9 (SIGKILL)", 10)
        run.wait_for_line("[model_server] ready again", READY_TIMEOUT)
        statuses = statuses_until_200(run, READY_TIMEOUT)
        assert set(statuses) <= {200, 503}, statuses
        assert run.pid_of("model_server") != old_pid and run.pid_of("gateway") == gateway_pid
        run.popen.send_signal(signal.SIGTERM)
        check_stopped_cleanly(run)


@pytest.mark.e2e
def test_killed_gateway_comes_back_while_the_model_server_keeps_running(tiny_model):
    with AutoCmd(*tiny_model, ["--no-input"], stdin=subprocess.DEVNULL) as run:
        run.wait_for_line("running until SIGTERM", READY_TIMEOUT)
        model_server_pid = run.pid_of("model_server")
        os.kill(run.pid_of("gateway"), signal.SIGKILL)
        run.wait_for_line("[gateway] exited unexpectedly with code -9 (SIGKILL)", 10)
        run.wait_for_line("[gateway] ready again", READY_TIMEOUT)
        assert predict_status(run) == 200
        assert run.pid_of("model_server") == model_server_pid
        # test that q/SIGTERM still stops the restarted gateway too
        run.popen.send_signal(signal.SIGTERM)
        check_stopped_cleanly(run)


@pytest.mark.e2e
def test_no_restart_stops_everything_when_a_server_dies(tiny_model):
    with AutoCmd(*tiny_model, ["--no-input", "--no-restart"], stdin=subprocess.DEVNULL) as run:
        run.wait_for_line("running until SIGTERM", READY_TIMEOUT)
        os.kill(run.pid_of("model_server"), signal.SIGKILL)
        assert run.popen.wait(EXIT_TIMEOUT) == 1, run.output()
        assert "[model_server] exited unexpectedly with code -9 (SIGKILL)" in run.output()
        assert "started again" not in run.output()
        assert port_closed(run.gw_port), "the gateway outlived auto_cmd"


@pytest.mark.e2e
@pytest.mark.parametrize(("port_name", "flag"), [("ms_port", "--rest-api-port"), ("grpc_port", "--grpc-port"),
                                                ("gw_port", "--gateway-port")])
def test_busy_port_stops_before_starting_anything(tiny_model, port_name, flag):
    with held_port() as (port, holder):
        with AutoCmd(*tiny_model, ["--no-input"], stdin=subprocess.DEVNULL, **{port_name: port}) as run:
            code = run.popen.wait(EXIT_TIMEOUT)
        output = run.output()
        # test that one line names the port, its holder (pid) and the flag that picks another
        lines = [line for line in output.splitlines() if f"port {port} " in line]
        assert code == 1 and len(lines) == 1, output
        assert f"pid {holder.pid}" in lines[0] and f"{flag}=PORT" in lines[0], lines[0]
        assert "Traceback" not in output and "starting" not in output and "started" not in output, output
        others = {run.ms_port, run.grpc_port, run.gw_port} - {port}
        assert all(port_closed(other) for other in others), "something was started"
        assert holder.alive(), "the holder must not be touched"


def test_end_of_input_keeps_running(monkeypatch):
    # test that stdin at EOF (e.g. < /dev/null) means "no keyboard", not "quit"
    stop = threading.Event()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    auto_cmd._watch_stdin(stop)
    assert not stop.is_set()
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n  EXIT \n"))
    auto_cmd._watch_stdin(stop)
    assert stop.is_set()


def test_missing_model_version_fails_fast(tmp_path, capsys):
    assert auto_cmd.main(["--model-base-path", str(tmp_path), "--no-input"]) == 2
    assert "no numeric model version" in capsys.readouterr().err


def test_check_ports_checks_only_the_ports(tmp_path, capsys):
    # test that --check-ports needs no model (tmp_path holds no version) and says nothing when all are free
    rest, grpc, gateway = free_port(), free_port(), free_port()
    args = ["--check-ports", "--model-base-path", str(tmp_path), "--rest-api-port", str(rest),
            "--grpc-port", str(grpc), "--gateway-port", str(gateway)]
    assert auto_cmd.main(args) == 0
    assert capsys.readouterr() == ("", "")
    # test that a listener on one port is the pre-flight's one line: the port, its holder, both ways to change it
    with socket.create_server(("127.0.0.1", gateway)):
        assert auto_cmd.main(args) == auto_cmd.EXIT_PORT_BUSY
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: port {gateway} (gateway) on 127.0.0.1 cannot be used"), err
    assert f"pid {os.getpid()}" in err and "--gateway-port=PORT" in err and "GATEWAY_PORT=PORT" in err, err


@pytest.mark.e2e
def test_check_ports_loads_no_tensorflow(tmp_path):
    # test that the check make runs before any download stays cheap: neither TensorFlow nor Keras is imported
    program = ("import sys; from scripts import auto_cmd; code = auto_cmd.main(sys.argv[1:]); "
               "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}); "
               "print(heavy); sys.exit(code)")
    args = ["--check-ports", "--model-base-path", str(tmp_path), "--rest-api-port", str(free_port()),
            "--grpc-port", str(free_port()), "--gateway-port", str(free_port())]
    done = subprocess.run([sys.executable, "-c", program, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "[]\n", done.stdout + done.stderr
