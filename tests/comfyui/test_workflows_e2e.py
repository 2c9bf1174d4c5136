"""Every shipped API workflow runs to completion on a real ComfyUI server with smoke models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_WORKFLOWS = sorted((ROOT / "example_workflows" / "api").glob("*.json"))
FAST = {"EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}}


def fast_prompt(path: Path) -> dict:
    """The workflow at 64x64 px and 2 steps, so a CPU runs it in seconds."""
    from likeness.tools.workflows.shipped import smoke_prompt

    prompt = smoke_prompt(json.loads(path.read_text()))
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
    return prompt


@pytest.fixture(scope="module")
def server_with_faces(comfy_server, reference_dir):
    inputs = comfy_server.base / "input"
    shutil.copy(reference_dir / "faces" / "astronaut.png", inputs / "likeness_face.png")
    shutil.copy(reference_dir / "faces" / "grace_hopper.png", inputs / "likeness_expression.png")
    return comfy_server


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=[p.stem for p in API_WORKFLOWS])
def test_api_workflow_completes_and_saves_images(server_with_faces, path):
    client = server_with_faces.client()
    prompt = fast_prompt(path)
    result = client.run(prompt, timeout=900)
    images = result.images()
    assert images, f"{path.name} saved no image; outputs: {result.outputs}"
    expected = 1
    for node in prompt.values():
        if node["class_type"] == "Likeness_AttributeSweep":
            from likeness.models.directions import parse_strengths

            expected = len(parse_strengths(node["inputs"]["strengths"]))
    saved = [img for img in images if img["type"] == "output"]
    assert len(saved) == expected
    for img in saved:
        data = client.view(img)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100
