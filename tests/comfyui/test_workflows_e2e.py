"""Every shipped API workflow runs to completion on a real ComfyUI server with smoke models (SDXL ones on their own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from likeness.tools.workflows.browser import fast_inputs

ROOT = Path(__file__).resolve().parents[2]
API_WORKFLOWS = sorted((ROOT / "example_workflows" / "api").glob("*.json"))
FAST = fast_inputs()  # the frontend tests' values: 64x64 latents, 2 steps, 2 training steps at a small size

IMAGES = {"likeness_sefi_portraits": 3, "likeness_sefi_seed_sweep": 4}  # images saved, where not 1


def fast_prompt(path: Path) -> dict:
    """The workflow at 64x64 px and 2 steps, so a CPU runs it in seconds."""
    from likeness.tools.workflows.shipped import smoke_prompt

    prompt = smoke_prompt(json.loads(path.read_text()))
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
    return prompt


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_api_workflow_completes_and_saves_images(workflow_server, path):
    prompt = fast_prompt(path)
    client = workflow_server(prompt).client()
    result = client.run(prompt, timeout=900)
    images = result.images()
    assert images, f"{path.name} saved no image; outputs: {result.outputs}"
    expected = IMAGES.get(path.stem, 1)
    for node in prompt.values():
        if node["class_type"] == "Likeness_AttributeSweep":
            from likeness.models.directions import parse_strengths

            expected = len(parse_strengths(node["inputs"]["strengths"]))
    saved = [img for img in images if img["type"] == "output"]
    assert len(saved) == expected
    for img in saved:
        data = client.view(img)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100
