"""The InstantID / PSTF (SDXL) templates in the real frontend, on the SDXL smoke server.

A module of its own, after test_frontend.py: Playwright's sync API runs one browser per thread, so the SD1.5
server's browser is closed before this one starts, and only one ComfyUI (the SDXL one needs up to 12.6 GB) runs.
"""

from __future__ import annotations

import json

import pytest
from test_frontend import ROOT, SDXL_TEMPLATES, _open_run_and_check, browser_on  # tests/comfyui is on sys.path

from likeness.tools.workflows.shipped import SDXL_SMOKE_NAMES, WORKFLOW_DIR, api_path, smoke_prompt


@pytest.fixture(scope="module")
def sdxl_frontend(workflow_server):
    """A browser on the SDXL server, whose shipped SDXL checkpoint name opens the SDXL smoke model."""
    first = json.loads(api_path(ROOT / WORKFLOW_DIR / f"{SDXL_TEMPLATES[0]}.json").read_text())
    server = workflow_server(smoke_prompt(first))
    try:
        for (folder, shipped), smoke in SDXL_SMOKE_NAMES.items():  # on the shared server these open the SD1.5 one
            alias = server.base / "shipped_names" / folder / shipped
            alias.unlink(missing_ok=True)
            alias.symlink_to(server.models / folder / smoke)
        with browser_on(server.url) as browser:
            yield browser
    finally:
        workflow_server({})  # back to the shared SD1.5 server for the modules after this one


@pytest.mark.parametrize("name", SDXL_TEMPLATES)
def test_sdxl_template_opens_runs_and_shows_its_results_on_the_nodes(sdxl_frontend, name):
    names = sdxl_frontend.template_names()
    module = next(m for m, templates in names.items() if name in templates)
    _open_run_and_check(sdxl_frontend, module, name)
