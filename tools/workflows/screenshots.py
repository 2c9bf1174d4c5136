"""README screenshots and template thumbnails, taken from the real frontend in headless Chromium.

``python -m models.cli screenshots --server URL`` opens every shipped template the way ComfyUI's template browser
does, runs it from the frontend (64x64 latents, 2 steps: this is about the UI, not the pictures), fits the
graph to the window and writes ``docs/workflows/<name>.png`` and the template thumbnail
``example_workflows/<title>.jpg``. The server must have this pack, the models the workflows name (smoke models
are fine: the pictures are then noise) and ``likeness_face.png`` / ``likeness_expression.png`` in its input
folder. Needs Chromium and the Python package playwright (see :mod:`.browser`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PIL import Image

from ...models.errors import LikenessError
from .shipped import TITLES, WORKFLOW_DIR

__all__ = ["take_screenshots", "THUMBNAIL_WIDTH"]

logger = logging.getLogger(__name__)
THUMBNAIL_WIDTH = 512


def _module(browser, titles: list[str]) -> str:
    for module, names in browser.template_names().items():
        if set(titles) <= set(names):
            return module
    raise LikenessError(f"the server does not list the templates {titles}: is this pack installed there?")


def take_screenshots(server: str, root: Path, run: bool = True) -> int:
    """Write the screenshots and thumbnails; returns 1 when the frontend reported a problem or a run failed."""
    from .browser import FAST_WIDGETS, Browser

    root = Path(root)
    browser = Browser(server)
    failures = 0
    try:
        browser.open()
        module = _module(browser, list(TITLES.values()))
        for stem, title in sorted(TITLES.items()):
            browser.load_template(module, title)
            if run:
                outcome = browser.run(FAST_WIDGETS)
                if outcome.get("status") != "success":
                    failures += 1
                    logger.error("%s: %s", title, outcome)
            browser.fit_view()
            shot = root / "docs" / "workflows" / f"{stem}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            browser.page.screenshot(path=str(shot))
            with Image.open(shot) as img:
                height = round(img.height * THUMBNAIL_WIDTH / img.width)
                thumb = img.convert("RGB").resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS)
                thumb.save(root / WORKFLOW_DIR / f"{title}.jpg", quality=85)
            problems = browser.take_problems()
            failures += bool(problems)
            for p in problems:
                logger.error("%s: %s", title, p)
            sys.stdout.write(f"wrote {shot} and {WORKFLOW_DIR}/{title}.jpg\n")
    finally:
        browser.close()
    return 1 if failures else 0
