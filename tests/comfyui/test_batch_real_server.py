"""The batch queue against a real ComfyUI server: a 12-prompt sweep survives a server restart mid-batch,
and a server killed right after a prompt finished gets that prompt collected, not run again."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
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
    save_id = next(nid for nid, node in workflow.items() if node.get("_meta", {}).get("title") == "Save")
    for point in report.points:
        saved = [o for o in point.outputs if o["node"] == save_id]  # besides Invert Face's preview images
        assert point.status == "done" and len(saved) == 1, point
        assert all((tmp_path / "out" / o["file"]).is_file() for o in point.outputs)
    # on the server: exactly one saved image per point, none run twice
    assert len(sorted(saved_dir.glob("run_*.png"))) == 12
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(rows) == 13  # header + 12 points


def test_a_server_killed_right_after_a_prompt_finished_collects_it_instead_of_running_it_again(
    comfy_server, reference_dir, tmp_path, monkeypatch
):
    """Polling only (the case issue 17 reported): SIGKILL on the websocket's ``execution_success`` of the
    third prompt, before the client could read its history; the restarted server knows nothing of it."""
    import websocket

    from likeness.tools.batch.client import ComfyClient
    from likeness.tools.batch.manifest import Manifest
    from likeness.tools.batch.outputs import marker_tag
    from likeness.tools.batch.runner import run_batch
    from likeness.tools.batch.spec import expand_spec
    from likeness.tools.batch.ws import ws_url

    shutil.copy(reference_dir / "faces" / "astronaut.png", comfy_server.base / "input" / "likeness_face.png")
    from likeness.tools.workflows.shipped import smoke_prompt

    workflow = smoke_prompt(json.loads((ROOT / "example_workflows" / "api" / "likeness_portrait.json").read_text()))
    spec = {
        "seeds": {"node": "Sampler", "input": "seed", "values": [201, 202, 203, 204, 205, 206]},
        "overrides": [
            {"node": "Latent", "input": "width", "value": 64},
            {"node": "Latent", "input": "height", "value": 64},
            {"node": "Sampler", "input": "steps", "value": 1},
            {"node": "Save", "input": "filename_prefix", "value": "killtest/run"},
        ],
    }
    saved_dir = comfy_server.base / "output" / "killtest"
    shutil.rmtree(saved_dir, ignore_errors=True)
    out = tmp_path / "out"
    manifest = Manifest.open(out)
    manifest.save()  # fixes the batch's client id and prompt ids before it starts
    target = manifest.prompt_id(expand_spec(workflow, spec)[2].point_id, 0)
    started, killed, restarted = threading.Event(), threading.Event(), threading.Event()
    timing = {}

    def follow():  # a second socket with the batch's client id: ComfyUI reports the batch's prompts to it
        sock = websocket.create_connection(ws_url(comfy_server.url, manifest.client_id), timeout=600)
        try:
            while True:
                frame = sock.recv()
                if not isinstance(frame, str):
                    continue
                message = json.loads(frame)
                data = message.get("data") or {}
                if data.get("prompt_id") != target:
                    continue
                if message["type"] == "execution_start":
                    started.set()
                elif message["type"] == "execution_success":
                    timing["after_success_ms"] = time.time() * 1000 - data["timestamp"]
                    comfy_server.kill()  # SIGKILL now, then waits for the process to be gone
                    killed.set()
                    comfy_server.start()
                    restarted.set()
                    return
        except (websocket.WebSocketException, OSError):
            return
        finally:
            sock.close()

    real_history_entry = ComfyClient.history_entry

    def history_entry(self, prompt_id):
        if prompt_id == target and started.is_set() and not killed.is_set():
            killed.wait(600)  # the client must not see the target's history before the kill
        return real_history_entry(self, prompt_id)

    monkeypatch.setattr(ComfyClient, "history_entry", history_entry)
    listener = threading.Thread(target=follow, daemon=True)
    listener.start()
    report = run_batch(
        workflow, spec, [comfy_server.url], out, poll_interval=0.3, server_timeout=300, use_websocket=False
    )
    listener.join(60)
    assert killed.is_set() and restarted.is_set(), "the server was not killed after the target prompt"
    assert report.ok, report.summary()
    by_prompt = {p.prompt_id: p for p in report.points}
    rec = by_prompt[target]
    assert rec.note and "collected from" in rec.note, rec
    assert rec.outputs[0]["filename"] == f"run_{marker_tag(target)}_00001_.png"
    assert (out / rec.outputs[0]["file"]).read_bytes() == (saved_dir / rec.outputs[0]["filename"]).read_bytes()
    saved = sorted(p.name for p in saved_dir.glob("run_*.png"))
    assert len(saved) == 6, saved  # one image per point: the target did not run a second time
    assert {name.split("_")[1] for name in saved} == {marker_tag(p.prompt_id) for p in report.points}
    logging.getLogger(__name__).info("SIGKILL sent %.1f ms after execution_success", timing["after_success_ms"])
    assert timing["after_success_ms"] < 500, timing  # killed within a moment of finishing (typically a few ms)


def test_a_point_comfyui_refuses_fails_alone_with_comfyuis_message(comfy_server, reference_dir, tmp_path):
    from likeness.tools.batch.runner import run_batch

    shutil.copy(reference_dir / "faces" / "astronaut.png", comfy_server.base / "input" / "likeness_face.png")
    from likeness.tools.workflows.shipped import smoke_prompt

    workflow = smoke_prompt(json.loads((ROOT / "example_workflows" / "api" / "likeness_portrait.json").read_text()))
    spec = {
        "sweep": [{"node": "Sampler", "input": "sampler_name", "values": ["euler", "no_such_sampler"]}],
        "overrides": [
            {"node": "Latent", "input": "width", "value": 64},
            {"node": "Latent", "input": "height", "value": 64},
            {"node": "Sampler", "input": "steps", "value": 1},
            {"node": "Save", "input": "filename_prefix", "value": "rejecttest/run"},
        ],
    }
    report = run_batch(workflow, spec, [comfy_server.url], tmp_path / "out", poll_interval=0.3, use_websocket=False)
    good, bad = report.points
    save_id = next(nid for nid, node in workflow.items() if node.get("_meta", {}).get("title") == "Save")
    assert good.status == "done", good
    # one saved image, plus whatever previews other nodes show (Invert Face's aligned crop and reconstruction)
    assert [o["node"] for o in good.outputs].count(save_id) == 1, good.outputs
    assert bad.status == "failed" and bad.attempts == 1
    lines = bad.error.splitlines()
    assert lines[0] == "ComfyUI refused the prompt (HTTP 400): Prompt outputs failed validation", bad.error
    assert lines[1].startswith("node 12 (KSampler): Value not in list: sampler_name: 'no_such_sampler' not in")
    assert bad.error_details["node_errors"]["12"]["class_type"] == "KSampler"
