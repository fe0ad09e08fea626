"""A real headless browser for tests: Debian's chromium driven by Playwright for Python.

Playwright never downloads a browser here (``executable_path`` points at the system's chromium), so the tests
run offline. Where Playwright or chromium is missing the tests that use these fixtures are *skipped* with the
reason and the fix; CI (``.ci/run``) installs both, so there they run. Fixtures (made available to every test
module by ``conftest.py``):

* ``chromium_browser`` (session): a launched headless chromium (``--no-sandbox``: CI runs as root);
* ``chromium_page``: a fresh page (closed after the test); see :func:`open_file` and :func:`media_duration`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """The system chromium: $STATEVAD_CHROMIUM, else Debian's /usr/bin/chromium, else one on PATH."""
    env = os.environ.get("STATEVAD_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for p in CHROMIUM_CANDIDATES:
        if Path(p).is_file():
            return p
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install -e '.[dev]' (the dev extra has it)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium found (Debian: apt-get install -y chromium, or set STATEVAD_CHROMIUM)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def chromium_page(chromium_browser: Any) -> Iterator[Any]:
    page = chromium_browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        yield page
    finally:
        page.close()


def open_file(page: Any, path: Path) -> None:
    """Load a local file in ``page`` and wait until it has loaded."""
    page.goto(path.resolve().as_uri(), wait_until="load")


# Resolves with the element's duration once its metadata is loaded (at once if it already is), with an
# "error: ..." string when the browser cannot decode it, or "timeout".
_DURATION_JS = """(sel) => new Promise((resolve) => {
  const v = document.querySelector(sel);
  if (!v) { resolve("error: no element " + sel); return; }
  const done = () => resolve(v.duration);
  if (v.readyState >= 1) { done(); return; }
  v.addEventListener("loadedmetadata", done);
  v.addEventListener("error", () =>
    resolve("error: " + (v.error ? v.error.code + " " + v.error.message : "?")));
  setTimeout(() => resolve("timeout"), 20000);
  v.load();
})"""


def media_duration(page: Any, selector: str = "video") -> float | str:
    """``video.duration`` after ``loadedmetadata`` (seconds), or why it did not load."""
    return page.evaluate(_DURATION_JS, selector)
