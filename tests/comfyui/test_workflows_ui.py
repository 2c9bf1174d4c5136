"""UI workflows against a live ComfyUI: conversion, validation, and the schema snapshot.

* every ``example_workflows/*.json`` converted with ``ui_to_api`` against the LIVE ``/object_info``
  equals its API twin, and the converted prompt (64x64, 2 steps) is accepted and runs;
* ``tests/data/object_info_snapshot.json`` equals the live entries (so the unit tier's
  static checks cannot drift from ComfyUI and the nodes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI_FILES = sorted((ROOT / "example_workflows").glob("*.json"))
SNAPSHOT_PATH = ROOT / "tests" / "data" / "object_info_snapshot.json"
FAST = {"EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}}


@pytest.fixture(scope="module")
def live(comfy_server, reference_dir):
    inputs = comfy_server.base / "input"
    shutil.copy(reference_dir / "faces" / "astronaut.png", inputs / "likeness_face.png")
    shutil.copy(reference_dir / "faces" / "grace_hopper.png", inputs / "likeness_expression.png")
    client = comfy_server.client()
    return client, client.object_info()


def test_snapshot_equals_live_object_info(live):
    from likeness.tools.workflows.convert import snapshot_entries

    _, object_info = live
    snapshot = json.loads(SNAPSHOT_PATH.read_text())
    current = snapshot_entries(object_info, snapshot)
    changed = sorted(c for c in snapshot if current[c] != snapshot[c])
    assert not changed, (
        f"node schemas changed since the snapshot: {changed}. Check the workflows still load, then run "
        "'python -m models.cli workflows --server URL' and commit the result."
    )


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_ui_workflow_converts_to_api_twin_and_runs(live, path):
    from likeness.tools.batch.client import PromptFailed, PromptRejected
    from likeness.tools.workflows.convert import ui_to_api
    from likeness.tools.workflows.shipped import api_path

    client, object_info = live
    prompt = ui_to_api(json.loads(path.read_text()), object_info)
    twin = json.loads(api_path(path).read_text())
    assert prompt == twin, f"{path.name} and api/{path.name} differ: regenerate the UI file"
    from likeness.tools.workflows.shipped import smoke_prompt

    prompt = smoke_prompt(prompt)
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
    try:
        result = client.run(prompt, timeout=900)
    except PromptRejected as exc:  # message: one line per node with id, class and ComfyUI's error
        pytest.fail(f"ComfyUI rejected {path.name}:\n{exc}")
    except PromptFailed as exc:  # message names the node id, class and exception
        pytest.fail(f"{path.name} failed on the server: {exc}")
    assert result.status == "success", f"{path.name}: {result.error_message()}"
    assert result.images(), f"{path.name} produced no image"
