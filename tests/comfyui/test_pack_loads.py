"""The pack loads into a real ComfyUI server with zero import errors, and its nodes execute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_server_imports_the_pack_without_errors(comfy_server):
    log = comfy_server.startup_log()
    assert "comfyui-likeness" in log, log[-3000:]
    bad = [line for line in log.splitlines() if "IMPORT FAILED" in line or ("Traceback" in line)]
    assert bad == [], log[-5000:]


def test_every_node_is_registered_with_category_tooltips_and_description(comfy_server):
    info = comfy_server.client().object_info()
    ours = {name: spec for name, spec in info.items() if name.startswith("Likeness_")}
    assert "Likeness_Doctor" in ours
    for name, spec in ours.items():
        assert spec["category"].startswith("likeness/"), name
        assert spec["description"], f"{name} has no description"
        for section in ("required", "optional"):
            for input_name, (_, options) in (
                (k, (v[0], v[1] if len(v) > 1 else {})) for k, v in spec["input"].get(section, {}).items()
            ):
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        tooltips = spec.get("output_tooltips") or []
        assert len(tooltips) == len(spec["output"]) and all(tooltips), f"{name} outputs need tooltips"


def test_doctor_node_runs_through_the_real_executor(comfy_server):
    client = comfy_server.client()
    result = client.run({"1": {"class_type": "Likeness_Doctor", "inputs": {}}}, timeout=120)
    text = "".join(result.outputs["1"]["text"])
    assert "Likeness doctor" in text
    assert "FOUND    e4e_ffhq_encode.pt" in text  # the smoke e4e file is on the model path
    assert "wplus_adapter.bin" in text


def test_web_extension_is_served(comfy_server):
    client = comfy_server.client()
    listed = client.get("/extensions")
    assert any("likeness" in path.lower() for path in listed), json.dumps(listed)[:500]


def test_workflows_are_listed_as_templates_of_the_pack(comfy_server):
    client = comfy_server.client()
    templates = client.get("/workflow_templates")
    ours = [names for pack, names in templates.items() if "likeness" in pack.lower()]
    assert ours, templates
    expected = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert sorted(ours[0]) == expected


def test_search_aliases_find_the_nodes_and_rare_inputs_are_advanced(comfy_server):
    info = comfy_server.client().object_info()
    ours = {name: spec for name, spec in info.items() if name.startswith("Likeness_")}
    assert all(spec.get("search_aliases") for spec in ours.values()), [
        n for n, s in ours.items() if not s.get("search_aliases")
    ]
    for word in ("age", "smile", "e4e", "identity"):
        found = [n for n, s in ours.items() if any(word in alias for alias in s["search_aliases"])]
        assert found, f"no node answers the search '{word}'"
    refine = ours["Likeness_FaceRefine"]["input"]
    advanced = [k for sec in ("required", "optional") for k, v in refine.get(sec, {}).items() if v[1].get("advanced")]
    assert {"crop_factor", "guide_size", "max_size", "feather", "noise_mask_feather", "grow"} <= set(advanced)
    assert len(advanced) >= 8


def test_texts_and_step_windows_are_refused_before_the_graph_runs(comfy_server):
    from likeness.tools.batch.client import PromptRejected

    client = comfy_server.client()
    prompt = {
        "1": {"class_type": "Likeness_LoadWPlus", "inputs": {"wplus_name": "none.safetensors"}},
        "2": {"class_type": "Likeness_MixIdentities", "inputs": {"wplus_a": ["1", 0], "wplus_b": ["1", 0],
                                                                 "alpha": 0.5, "rows": "0-40"}},
        "3": {"class_type": "Likeness_SaveWPlus", "inputs": {"wplus": ["2", 0], "filename_prefix": "x"}},
    }  # fmt: skip
    with pytest.raises(PromptRejected, match="0-40. is not a row between 0 and 17"):
        client.run(prompt, timeout=60)


def test_validate_inputs_of_the_nodes(comfy_env):
    from likeness.nodes.editing_nodes import LikenessAttributeSweep, LikenessEditAttributes, LikenessMixIdentities
    from likeness.nodes.wplus_file_nodes import sanitize_prefix
    from likeness.nodes.wplus_nodes import LikenessApplyWPlusAdapter

    assert LikenessEditAttributes.validate_inputs({"edits": "2"}, "smile -1 0-7") is True
    assert "Cannot read the W+ rows 'x-y'" in LikenessEditAttributes.validate_inputs({"edits": "1"}, "smile -1 x-y")
    assert "input 'extra_edits', line 2 'smile'" in LikenessEditAttributes.validate_inputs(None, "age 1\nsmile")
    assert "'9' is not a number of sliders between 1 and 8" in LikenessEditAttributes.validate_inputs(
        {"edits": "9"}, ""
    )
    assert LikenessAttributeSweep.validate_inputs("-4:4:2", "default", "-1,0,1", "fine") is True
    assert "step" in LikenessAttributeSweep.validate_inputs("-4:4:-2", "default", "1", "default")
    assert LikenessMixIdentities.validate_inputs(None) is True  # linked: checked when it runs
    assert "below end_at" in LikenessApplyWPlusAdapter.validate_inputs(start_at=0.8, end_at=0.2)
    assert LikenessApplyWPlusAdapter.validate_inputs(1.0, 0.2, 1.0) is True
    assert sanitize_prefix("../../etc/pass:wd") == "etc/pass_wd" and sanitize_prefix(" / .. ") == "identity"
