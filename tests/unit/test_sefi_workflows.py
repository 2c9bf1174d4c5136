"""The SeFi workflows fit together: learn saves what the generation workflows load, prompts use V*, notes say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from likeness.tools.smoke.sefi import SMOKE_SEFI_IDENTITY
from likeness.tools.workflows.layout import default_groups
from likeness.tools.workflows.notes import model_note

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "example_workflows" / "api"
GENERATE = ("likeness_sefi_portraits", "likeness_sefi_seed_sweep")


def _api(name: str) -> dict:
    return json.loads((API / f"{name}.json").read_text())


def _nodes(api: dict, cls: str) -> list[dict]:
    return [n for n in api.values() if n["class_type"] == cls]


def test_learn_saves_the_file_the_generation_workflows_and_the_smoke_models_use():
    learn = _api("likeness_sefi_learn")
    (save,) = _nodes(learn, "Likeness_SaveIDTokens")
    (learner,) = _nodes(learn, "Likeness_LearnIDTokens")
    assert learner["inputs"]["steps"] == 600 and learner["inputs"]["attention_weight"] == 0.003
    assert learner["inputs"]["face_crop"] == "face" and isinstance(learner["inputs"]["face_analyzer"], list)
    assert f"{save['inputs']['name']}.safetensors" == SMOKE_SEFI_IDENTITY
    for name in GENERATE:
        (load,) = _nodes(_api(name), "Likeness_LoadIDTokens")
        assert load["inputs"]["id_tokens_name"] == SMOKE_SEFI_IDENTITY


@pytest.mark.parametrize("name", GENERATE)
def test_generation_prompts_use_the_placeholder_through_the_sefi_clip_and_model(name):
    api = _api(name)
    (apply,) = _nodes(api, "Likeness_ApplyIDTokens")
    apply_id = next(k for k, v in api.items() if v is apply)
    placeholder = apply["inputs"]["placeholder"]
    texts = [n for n in _nodes(api, "CLIPTextEncode") if placeholder in n["inputs"]["text"]]
    assert texts and all(n["inputs"]["clip"] == [apply_id, 1] for n in _nodes(api, "CLIPTextEncode"))
    samplers = _nodes(api, "KSampler")
    assert all(s["inputs"]["model"] == [apply_id, 0] for s in samplers)
    if name == "likeness_sefi_seed_sweep":
        assert sorted(s["inputs"]["seed"] for s in samplers) == [1, 2, 3, 4] and len(texts) == 1
    else:
        assert len(texts) == 3 and len(samplers) == 3


def test_groups_and_read_me_note_of_sefi_workflows():
    learn, portraits = _api("likeness_sefi_learn"), _api("likeness_sefi_portraits")
    assert list(default_groups(learn)) == ["SeFi - learn ID tokens from one photo (SD1.5)"]
    groups = default_groups(portraits)
    assert sorted(groups["SeFi - ID tokens for the word V*"], key=int) == ["1", "2", "3"]
    note = model_note(portraits)
    assert f"models/likeness_identities/{SMOKE_SEFI_IDENTITY}" in note and "arXiv 2402.00631" in note
    assert "no code or weights" in note and "NON-COMMERCIAL" in note
    assert "arXiv" not in model_note(json.loads((API / "likeness_portrait.json").read_text()))
