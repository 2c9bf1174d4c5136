"""Drive the real ComfyUI frontend in headless Debian Chromium (Playwright for Python, the system browser).

Used by the comfyui-tier browser tests and by ``python -m models.cli screenshots``. Installs nothing; needs
``apt-get install -y chromium`` (or ``LIKENESS_CHROMIUM=/path/to/chrome``) and ``pip install playwright`` (the
Python package only: never ``playwright install``, the system Chromium is used).

:class:`Browser` records every console error, page error, failed request, HTTP error answer and
``vite:preloadError`` in :attr:`Browser.problems`; :meth:`Browser.open` keeps what the frontend itself logs
while it starts in :attr:`Browser.startup_problems`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = ["CHROMIUM_ARGS", "Browser", "chromium_path", "FAST_WIDGETS", "fast_inputs"]

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
# A failed dynamic import of an extension module (the old ../../scripts/app.js bug) is reported here.
_INIT_SCRIPT = """
window.__likenessProblems = [];
window.addEventListener('vite:preloadError', (e) => {
  window.__likenessProblems.push('vite:preloadError ' + ((e.payload && e.payload.message) || e.payload || e));
});
"""
# (class, widget) -> value that makes a CPU run take seconds (64x64 latents, 2 steps)
FAST_WIDGETS: dict[tuple[str, str], Any] = {
    ("EmptyLatentImage", "width"): 64,
    ("EmptyLatentImage", "height"): 64,
    ("KSampler", "steps"): 2,
    ("Likeness_FaceRefine", "steps"): 2,
    ("Likeness_FaceRefine", "guide_size"): 64,
    ("Likeness_FaceRefine", "max_size"): 128,
    ("Likeness_TrainFaceA", "steps"): 2,
    ("Likeness_TrainFaceA", "batch_size"): 1,
    ("Likeness_TrainFaceA", "resolution"): 128,
    ("Likeness_SaveFaceAIdentity", "overwrite"): True,
    ("Likeness_LearnIDTokens", "steps"): 2,
    ("Likeness_LearnIDTokens", "resolution"): 64,
    ("Likeness_SaveIDTokens", "overwrite"): True,
}


def fast_inputs() -> dict[str, dict[str, Any]]:
    """:data:`FAST_WIDGETS` per class, ``{class_type: {input: value}}``, for API prompts."""
    out: dict[str, dict[str, Any]] = {}
    for (cls, name), value in FAST_WIDGETS.items():
        out.setdefault(cls, {})[name] = value
    return out


_RUN_SCRIPT = """async ([values]) => {
  const app = window.app, api = window.comfyAPI.api.api;
  for (const node of app.graph.nodes)
    for (const w of node.widgets || []) {
      const key = node.type + "|" + w.name;
      if (key in values) w.value = values[key];
    }
  const done = new Promise((resolve) => {
    const off = (status) => () => resolve(status);
    api.addEventListener("execution_success", off({ status: "success" }), { once: true });
    api.addEventListener("execution_error", (e) => resolve({ status: "error", detail: e.detail }), { once: true });
    api.addEventListener("execution_interrupted", off({ status: "interrupted" }), { once: true });
  });
  await app.queuePrompt(0, 1);
  return await done;
}"""

_RESULTS_SCRIPT = """() => {
  const app = window.app, out = {};
  const outputs = app.nodeOutputs || {};
  for (const node of app.graph.nodes) {
    const widget = (name) => (node.widgets || []).find((w) => w.name === name);
    const o = outputs[String(node.id)] || {};
    out[node.id] = {
      type: node.type,
      title: node.title,
      text: widget("likeness_info") ? String(widget("likeness_info").value) : "",
      warning: widget("likeness_warning") ? String(widget("likeness_warning").value) : "",
      images: (o.images || []).length,
      shown: (node.imgs || []).length,
      color: node.color || null,
    };
  }
  return out;
}"""


def chromium_path() -> str:
    """The Chromium binary (``LIKENESS_CHROMIUM``, ``chromium`` on PATH, or ``/usr/bin/chromium``)."""
    path = os.environ.get("LIKENESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        raise LikenessError("Chromium not found: apt-get install -y chromium (or set LIKENESS_CHROMIUM).")
    return path


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise LikenessError("the Python package 'playwright' is not installed: pip install playwright") from exc
    return sync_playwright


class Browser:
    """One headless Chromium with a fresh profile and one page on a ComfyUI server."""

    def __init__(self, base_url: str, width: int = 1400, height: int = 900):
        self.base_url = base_url.rstrip("/")
        self.problems: list[str] = []
        self.startup_problems: list[str] = []
        executable = chromium_path()
        self._pw = _sync_playwright()().start()
        self._profile = tempfile.mkdtemp(prefix="likeness-chromium-")
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.add_init_script(_INIT_SCRIPT)
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
        """Load the frontend; wait for the canvas and the extensions, close the first-run template browser."""
        self.page.goto(self.base_url + "/", wait_until="load", timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.app && window.app.canvas && window.app.extensions && window.app.extensions.length > 0",
            timeout=timeout_ms,
        )
        self.page.wait_for_load_state("networkidle", timeout=timeout_ms)
        self.page.keyboard.press("Escape")
        self.page.wait_for_timeout(500)
        self.startup_problems = self.take_problems()

    def take_problems(self) -> list[str]:
        """Problems recorded since the last call (the page's ``vite:preloadError`` list included)."""
        early = self.page.evaluate("() => window.__likenessProblems.splice(0)")
        out, self.problems = self.problems + list(early), []
        return out

    def template_names(self) -> dict[str, list[str]]:
        """``GET /workflow_templates`` as the frontend sees it: ``{pack folder: [template names]}``."""
        return self.page.evaluate("async () => (await window.comfyAPI.api.api.getWorkflowTemplates())")

    def load_template(self, module: str, name: str) -> None:
        """Open a pack's template the way the template browser does (fetch its JSON, load the graph)."""
        url = f"/api/workflow_templates/{urllib.parse.quote(module)}/{urllib.parse.quote(name)}.json"
        self.page.evaluate(
            """async ([url, name]) => {
              const graph = await (await fetch(url)).json();
              await window.app.loadGraphData(graph, true, true, name, { openSource: 'template' });
            }""",
            [url, name],
        )
        self.page.wait_for_load_state("networkidle")

    def run(self, values: dict[tuple[str, str], Any] | None = None, timeout_ms: int = 900_000) -> dict:
        """Set ``{(class, widget): value}``, queue the open graph from the frontend, wait for the end."""
        flat = {f"{cls}|{name}": v for (cls, name), v in (values or {}).items()}
        self.page.set_default_timeout(timeout_ms)
        try:
            return self.page.evaluate(_RUN_SCRIPT, [flat])
        finally:
            self.page.set_default_timeout(30_000)

    def results(self) -> dict[str, dict]:
        """Per node id: type, title, the text and warning shown on it, its image outputs and colour."""
        return self.page.evaluate(_RESULTS_SCRIPT)

    def fit_view(self) -> None:
        """Zoom so that every node and group is on screen (for screenshots)."""
        self.page.evaluate(
            """() => {
              const c = window.app.canvas, g = window.app.graph;
              const boxes = g.nodes.map((n) => [n.pos[0], n.pos[1] - 30, n.pos[0] + n.size[0], n.pos[1] + n.size[1]])
                .concat((g.groups || []).map((x) => x._bounding || x.bounding)
                  .map((b) => [b[0], b[1], b[0] + b[2], b[1] + b[3]]));
              const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
              const x1 = Math.max(...boxes.map((b) => b[2])), y1 = Math.max(...boxes.map((b) => b[3]));
              const [left, top] = [70, 100]; // below the tab bar and the floating Graph / Run toolbars
              const scale = Math.min((innerWidth - left - 20) / (x1 - x0), (innerHeight - top - 20) / (y1 - y0));
              c.low_quality_zoom_threshold = 0.1;
              c.ds.scale = scale;
              c.ds.offset = [left / scale - x0, top / scale - y0];
              c.setDirty(true, true);
              document.querySelectorAll('.p-toast-message').forEach((t) => t.remove()); // "Job queued" and the like
            }"""
        )
        self.page.wait_for_timeout(1500)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
