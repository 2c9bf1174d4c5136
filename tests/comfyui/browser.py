"""Drive the real ComfyUI frontend in headless Debian Chromium (Playwright for Python, system browser).

Nothing here installs anything. Needs (see README, "Tests"):

* ``apt-get install -y chromium`` (``/usr/bin/chromium``; another binary via ``LIKENESS_CHROMIUM``);
* ``pip install playwright`` in the comfyui-tier venv (the Python package only: never ``playwright install``,
  the system Chromium is used).

:class:`Browser` records every console error, page error, failed request, HTTP error answer and
``vite:preloadError`` in :attr:`Browser.problems`, so a test can assert there were none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Seen before the app loads: a failed dynamic import of an extension module ends up here.
INIT_SCRIPT = """
window.__likenessProblems = [];
window.addEventListener('vite:preloadError', (e) => {
  window.__likenessProblems.push('vite:preloadError ' + (e.payload && e.payload.message || e.payload || e));
});
"""


def chromium_path() -> str:
    """The Chromium binary, or skip the test saying how to install it."""
    path = os.environ.get("LIKENESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip("browser tests: Chromium not found (apt-get install -y chromium, or set LIKENESS_CHROMIUM)")
    return path


def require_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests: the Python package 'playwright' is not installed (pip install playwright)")
    return sync_playwright


class Browser:
    """One headless Chromium with a fresh profile and one page on a ComfyUI server."""

    def __init__(self, base_url: str, width: int = 1400, height: int = 900):
        self.base_url = base_url.rstrip("/")
        self.problems: list[str] = []
        executable = chromium_path()
        self._pw = require_playwright()().start()
        self._profile = tempfile.mkdtemp(prefix="likeness-chromium-")
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.add_init_script(INIT_SCRIPT)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on("response", self._on_response)

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            where = msg.location or {}
            self.problems.append(f"console error: {msg.text} ({where.get('url', '')}:{where.get('lineNumber', '')})")

    def _on_request_failed(self, request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def open(self, timeout_ms: int = 180_000) -> None:
        """Load the frontend and wait until the graph canvas and the extensions are up."""
        self.page.goto(self.base_url, wait_until="load", timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.app.extensions"
            " && window.app.extensions.length > 0",
            timeout=timeout_ms,
        )
        self.page.wait_for_load_state("networkidle", timeout=timeout_ms)

    def all_problems(self) -> list[str]:
        """Problems recorded so far, including the page's own ``vite:preloadError`` list."""
        try:
            early = self.page.evaluate("() => window.__likenessProblems || []")
        except Exception as exc:  # the page itself is gone
            early = [f"page not readable: {exc}"]
        return self.problems + list(early)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
