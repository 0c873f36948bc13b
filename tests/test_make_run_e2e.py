"""`make run` with a busy port: one line and a non-zero exit before any download or export.

The real Makefile, run the way a new user runs it, with every model path pointing at an empty
directory (so `run` would otherwise download a model and export it there) and another process
listening on one of its ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT, free_port, held_port, port_closed

MAKE = shutil.which("make")
PORT_VARIABLES = ("REST_API_PORT", "GRPC_PORT", "GATEWAY_PORT")
# A hang guard, not a speed target: without the pre-flight check make would first download and
# export a model, and a wrong check could start servers that never exit.
RUN_BOUND = 120.0

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(MAKE is None, reason="make is not installed")]


def make_run(variables: dict[str, str]) -> tuple[int, str, int]:
    """Run ``make run`` with ``variables``; (exit code, output, its process group)."""
    # -o: this test runs inside the installed venv; make must not reinstall it because the stamp
    # file predates a checkout. PY: the interpreter running the tests.
    command = [MAKE, "--no-print-directory", "-o", ".venv/.installed", "run", f"PY={sys.executable}",
               *(f"{name}={value}" for name, value in variables.items())]
    # A make above pytest (make test) must not hand this one its jobserver or flags.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    popen = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = popen.communicate(timeout=RUN_BOUND)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        output, _ = popen.communicate()
        pytest.fail(f"make run did not stop within {RUN_BOUND} s:\n{output[-4000:]}")
    return popen.returncode, output, popen.pid


def group_is_gone(pgid: int) -> bool:
    """True when no process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # do not leave it running for the next test
    return False


@pytest.mark.parametrize(("busy", "models"), [("REST_API_PORT", ""), ("GATEWAY_PORT", "MobileNetV2"),
                                              ("GRPC_PORT", "")])
def test_busy_port_stops_make_run_before_any_model_work(tmp_path, busy, models):
    empty = tmp_path / "models"
    empty.mkdir()
    with held_port() as (port, holder):
        ports = {name: port if name == busy else free_port() for name in PORT_VARIABLES}
        code, output, pgid = make_run({
            **{name: str(value) for name, value in ports.items()},
            "MODELS": models, "MODEL_BASE_PATH": str(empty), "MODEL_REPOSITORY": str(empty),
            "KERAS_MODEL": str(empty / "inception.keras"),
        })
        # test that one line names the port, its holder and the make variable that picks another
        lines = [line for line in output.splitlines() if line.startswith(f"error: port {port} ")]
        assert code != 0 and len(lines) == 1, output
        assert f"{busy}=PORT" in lines[0] and f"pid {holder.pid}" in lines[0], lines[0]
        assert "Traceback" not in output, output
        # test that nothing was downloaded or exported, and nothing started or left running
        assert list(empty.iterdir()) == [], output
        assert group_is_gone(pgid), f"make run left processes behind:\n{output}"
        assert all(port_closed(other) for name, other in ports.items() if name != busy), output
        assert holder.alive(), "the holder must not be touched"
