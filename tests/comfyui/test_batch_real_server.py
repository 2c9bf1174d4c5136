"""The batch queue against a real ComfyUI server: a 12-prompt sweep survives a server restart mid-batch."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_twelve_prompt_sweep_with_a_server_restart_loses_and_duplicates_nothing(comfy_server, reference_dir, tmp_path):
    from likeness.tools.batch.runner import run_batch
    from likeness.tools.workflows.shipped import smoke_prompt

    shutil.copy(reference_dir / "faces" / "astronaut.png", comfy_server.base / "input" / "likeness_face.png")
    workflow = smoke_prompt(json.loads((ROOT / "example_workflows" / "api" / "likeness_portrait.json").read_text()))
    spec = {
        "sweep": [{"node": "Edit attributes", "input": "edits.strength_1", "values": [-2, 0, 2], "name": "age"}],
        "seeds": {"node": "Sampler", "input": "seed", "values": [101, 102, 103, 104]},
        "overrides": [
            {"node": "Latent", "input": "width", "value": 64},
            {"node": "Latent", "input": "height", "value": 64},
            {"node": "Sampler", "input": "steps", "value": 1},
            {"node": "Save", "input": "filename_prefix", "value": "batchtest/run"},
        ],
    }
    saved_dir = comfy_server.base / "output" / "batchtest"
    shutil.rmtree(saved_dir, ignore_errors=True)
    restarted = threading.Event()
    events = []

    def restart_server():
        comfy_server.kill()
        comfy_server.start()
        restarted.set()

    def on_progress(p):
        events.append(p.event)
        if (
            p.event == "done"
            and p.done == 4
            and not restarted.is_set()
            and not any(t.name == "restart" for t in threading.enumerate())
        ):
            threading.Thread(target=restart_server, name="restart", daemon=True).start()

    report = run_batch(
        workflow,
        spec,
        [comfy_server.url],
        tmp_path / "out",
        progress=on_progress,
        poll_interval=0.3,
        server_timeout=300,
        use_websocket=False,
    )
    assert restarted.is_set(), "the server was not restarted during the batch"
    assert report.ok, report.summary()
    assert len(report.points) == 12 and len({p.label for p in report.points}) == 12
    assert "server_down" in events and "server_up" in events
    for point in report.points:
        assert point.status == "done" and len(point.outputs) == 1, point
        assert (tmp_path / "out" / point.outputs[0]["file"]).is_file()
    # on the server: exactly one saved image per point, none run twice
    assert len(sorted(saved_dir.glob("run_*.png"))) == 12
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(rows) == 13  # header + 12 points
