"""Hot swap under load: new versions land on disk while 8 clients call the real gunicorn gateway.

Version 2 is exported by the real exporter (different weights), version 3 is copied in the way a
deploy tool would (hidden staging dir + rename). Proves: no request fails at any point, every
client sees the model_version move to the new version once it is loaded and never go back, and
the model server unloads the old versions afterwards.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.reliability.conftest import SWAP, copy_version, export_version, ready, run_clients

pytestmark = pytest.mark.timeout(150)

CLIENTS = 8


def versions_seen(results) -> list[list[int]]:
    """Each client's model_version sequence, in the order it sent its requests."""
    return [[o.body["model_version"] for o in mine if o.status == 200] for mine in results]


def wait_until_every_client_sees(results, version: int, times: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(seq[-times:] == [version] * times for seq in versions_seen(results)):
        assert time.monotonic() < deadline, f"clients did not all move to version {version} within {timeout} s"
        time.sleep(0.1)


def test_new_versions_swap_in_under_load_without_a_single_failure(launched, model_server, gateway, good_png):
    ready(model_server, SWAP)
    stop = threading.Event()
    url = f"{gateway.url}/v1/models/{SWAP}/predict"
    threads, results = run_clients(CLIENTS, lambda s: s.post(url, data=good_png, timeout=30,
                                                             headers={"Content-Type": "image/png"}), stop)
    try:
        wait_until_every_client_sees(results, 1, 3, 30)
        started = time.monotonic()
        export_version(launched.base(SWAP), 2, seed=2)  # the real exporter, while clients call
        wait_until_every_client_sees(results, 2, 3, 60)
        swap_2 = time.monotonic() - started
        started = time.monotonic()
        copy_version(launched.base(SWAP) / "1", launched.base(SWAP), 3)
        wait_until_every_client_sees(results, 3, 3, 60)
        swap_3 = time.monotonic() - started
        time.sleep(1.5)  # keep calling while the old versions unload
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    outcomes = [o for mine in results for o in mine]
    failures = [(o.status, o.body or o.error) for o in outcomes if o.status != 200]
    print(f"\nhot swap under {CLIENTS} clients: {len(outcomes)} requests, {len(failures)} failed; "
          f"version 2 (export) everywhere after {swap_2:.1f} s, version 3 (copy) after {swap_3:.1f} s")
    assert failures == []
    for seq in versions_seen(results):
        assert seq == sorted(seq), f"a client saw the version go back: {seq}"
        assert seq[0] == 1 and seq[-1] == 3
    status = requests.get(f"{model_server.url}/v1/models/{SWAP}", timeout=5).json()["model_version_status"]
    states = {int(v["version"]): v["state"] for v in status}
    assert states[3] == "AVAILABLE"
    deadline = time.monotonic() + 20
    while {v: s for v, s in states.items() if v != 3 and s != "END"}:
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
        status = requests.get(f"{model_server.url}/v1/models/{SWAP}", timeout=5).json()["model_version_status"]
        states = {int(v["version"]): v["state"] for v in status}
