"""Headless Chromium for page tests, driven by Playwright's Python API.

Uses the system browser (Debian's ``chromium``, installed by ``make system-deps``) rather than a
Playwright-downloaded build, so nothing is fetched at test time. Typical use::

    with chromium_page() as page:
        page.goto(url)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# No sandbox: CI containers run as root without user namespaces. The rest stops Chromium from
# phoning home (updates, sync, field trials), which would only time out on an offline machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 1100}
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str | None:
    """The system Chromium binary, if installed."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


@contextlib.contextmanager
def chromium_page(timeout_ms: float = 15_000) -> Iterator:
    """A fresh page in a headless system Chromium; skips the test if Chromium is missing."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium not installed (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
