"""The shipped FaceA workflows on a real ComfyUI server: train 2 steps and save, refine a real face with
the identity just trained, and Cancel during training leaves no file."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TRAIN_FAST = {"steps": 2, "batch_size": 1, "resolution": 128}


def _api(name: str) -> dict:
    return json.loads((ROOT / "example_workflows" / "api" / f"{name}.json").read_text())


def _node(prompt: dict, cls: str) -> dict:
    (node,) = [n for n in prompt.values() if n["class_type"] == cls]
    return node


@pytest.fixture(scope="module")
def server(comfy_server, reference_dir):
    shutil.copy(reference_dir / "faces" / "astronaut.png", comfy_server.base / "input" / "likeness_face.png")
    return comfy_server


def _identities(server) -> Path:
    return server.base / "models" / "likeness_identities"


def test_train_workflow_saves_an_identity_that_the_refine_workflow_uses_on_a_real_face(server):
    from likeness.models.facea import FaceAIdentity

    client = server.client()
    train = _api("likeness_facea_train")
    _node(train, "Likeness_TrainFaceA")["inputs"].update(TRAIN_FAST)
    _node(train, "Likeness_SaveFaceAIdentity")["inputs"].update(name="e2e_alice", overwrite=True)
    result = client.run(train, timeout=1200)
    saved = _identities(server) / "e2e_alice.safetensors"
    identity = FaceAIdentity.load(saved)
    assert identity.provenance.steps == 2 and identity.class_word == "woman"
    assert identity.meta["lora"]["rank"] == 48 and identity.meta["recipe"]["resolution"] == 128
    (curve,) = [img for img in result.images() if img["type"] == "output"]
    assert Image.open(io.BytesIO(client.view(curve))).size == (512, 256)

    refine = _api("likeness_facea_refine")
    _node(refine, "Likeness_LoadFaceAIdentity")["inputs"]["identity_name"] = "e2e_alice.safetensors"
    # refine a real photo instead of the smoke scene (noise has no face): LoadImage replaces the scene decode
    face_refine = _node(refine, "Likeness_FaceRefine")
    refine["90"] = {"class_type": "LoadImage", "inputs": {"image": "likeness_face.png"}, "_meta": {"title": "photo"}}
    face_refine["inputs"].update(image=["90", 0], steps=2, guide_size=128, max_size=256, on_no_face="error")
    for nid in [n for n, v in refine.items() if v["class_type"] in ("KSampler", "VAEDecode", "EmptyLatentImage")]:
        del refine[nid]
    result = client.run(refine, timeout=1200)
    (out,) = [img for img in result.images() if img["type"] == "output"]
    refined = np.asarray(Image.open(io.BytesIO(client.view(out))).convert("RGB")).astype(np.int16)
    photo = np.asarray(Image.open(server.base / "input" / "likeness_face.png").convert("RGB")).astype(np.int16)
    assert refined.shape == photo.shape
    diff = np.abs(refined - photo).max(axis=-1)
    assert diff.max() > 20  # the face was redrawn
    assert (diff == 0).mean() > 0.8  # everything else stayed as it was (the face is ~1/30 of the photo)


def test_cancel_during_training_on_the_server_leaves_no_file(server):
    client = server.client()
    train = _api("likeness_facea_train")
    _node(train, "Likeness_TrainFaceA")["inputs"].update({**TRAIN_FAST, "steps": 400, "seed": 99})
    _node(train, "Likeness_SaveFaceAIdentity")["inputs"].update(name="e2e_cancelled", overwrite=True)
    before = sorted(p.name for p in _identities(server).iterdir())
    log_start = len(server.log())
    prompt_id = client.queue(train)
    deadline = time.monotonic() + 600
    while "FaceA: step" not in server.log()[log_start:]:  # the training loop is running
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.5)
    client.interrupt()
    while True:  # until the prompt has ended (interrupted prompts end with status "error")
        entry = client.history_entry(prompt_id) or {}
        if entry.get("status", {}).get("status_str") in ("error", "success"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds
    assert sorted(p.name for p in _identities(server).iterdir()) == before  # no file, no temporary file
