"""UI workflows against a live ComfyUI: conversion, validation, and the schema snapshot.

* every ``example_workflows/*.json`` converted with ``ui_to_api`` against the LIVE ``/object_info``
  equals its API twin, and the converted prompt (64x64, 2 steps) is accepted and runs;
* ``tests/data/object_info_snapshot.json`` equals the live entries (so the unit tier's
  static checks cannot drift from ComfyUI and the nodes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from likeness.tools.workflows.browser import fast_inputs

ROOT = Path(__file__).resolve().parents[2]
UI_FILES = sorted((ROOT / "example_workflows").glob("*.json"))
SNAPSHOT_PATH = ROOT / "tests" / "data" / "object_info_snapshot.json"
FAST = fast_inputs()  # the frontend tests' values: 64x64 latents, 2 steps, 2 training steps at a small size


@pytest.fixture(scope="module")
def live(comfy_server, workflow_server):
    client = workflow_server({}).client()  # the shared server, with the input photos
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
def test_ui_workflow_converts_to_api_twin_and_runs(live, workflow_server, path):
    from likeness.tools.batch.client import PromptFailed, PromptRejected
    from likeness.tools.workflows.convert import ui_to_api
    from likeness.tools.workflows.shipped import api_path

    _, object_info = live
    prompt = ui_to_api(json.loads(path.read_text()), object_info)
    twin = json.loads(api_path(path).read_text())
    assert prompt == twin, f"{path.name} and api/{path.name} differ: regenerate the UI file"
    from likeness.tools.workflows.shipped import smoke_prompt

    prompt = smoke_prompt(prompt)
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
    client = workflow_server(prompt).client()  # SDXL workflows run on their own server
    try:
        result = client.run(prompt, timeout=900)
    except PromptRejected as exc:  # message: one line per node with id, class and ComfyUI's error
        pytest.fail(f"ComfyUI rejected {path.name}:\n{exc}")
    except PromptFailed as exc:  # message names the node id, class and exception
        pytest.fail(f"{path.name} failed on the server: {exc}")
    assert result.status == "success", f"{path.name}: {result.error_message()}"
    assert result.images(), f"{path.name} produced no image"
