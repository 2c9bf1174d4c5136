"""Shipped workflows checked against the schema snapshot, without ComfyUI.

The snapshot (tests/data/object_info_snapshot.json) is written by
``python -m models.cli workflows`` and kept equal to a live server's
``/object_info`` by tests/comfyui/test_workflows_ui.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from likeness.models.errors import LikenessError
from likeness.tools.workflows.convert import (
    DYNAMIC_COMBO,
    VIRTUAL_NODES,
    all_specs,
    api_to_ui,
    expand_specs,
    input_specs,
    is_file_list,
    ui_to_api,
    widget_layout,
)
from likeness.tools.workflows.shipped import SHIPPED_MODELS, SMOKE_NAMES, WORKFLOW_DIR, api_path, smoke_prompt, ui_path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = json.loads((ROOT / "tests" / "data" / "object_info_snapshot.json").read_text())
API_FILES = sorted((ROOT / WORKFLOW_DIR / "api").glob("*.json"))
UI_FILES = sorted((ROOT / WORKFLOW_DIR).glob("*.json"))


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _spec(cls: str, name: str):
    return next(s for s in all_specs(SNAPSHOT[cls]) if s.name == name)


def check_value(cls: str, name: str, value) -> str | None:
    """Why ``value`` is not acceptable for widget ``name`` of ``cls`` (None when it is)."""
    spec = _spec(cls, name)
    opts = spec.options
    if spec.type in ("COMBO", DYNAMIC_COMBO):
        if is_file_list(cls, spec):
            return None if isinstance(value, str) and value else f"file name must be a non-empty string, got {value!r}"
        return None if value in spec.choices else f"{value!r} not in {spec.choices}"
    if spec.type in ("INT", "FLOAT"):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (spec.type == "INT" and not isinstance(value, int))
        ):
            return f"{value!r} is not {spec.type}"
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return f"{value} outside [{opts.get('min')}, {opts.get('max')}]"
        return None
    if spec.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a bool"
    if spec.type == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    return None


def test_every_api_workflow_has_a_ui_twin_and_back():
    assert API_FILES, "no API workflows shipped"
    assert sorted(api_path(p) for p in UI_FILES) == API_FILES, "every template needs its API twin and back"
    assert [ui_path(ROOT, p.stem) for p in API_FILES] == [p for p in UI_FILES if api_path(p) in API_FILES]


@pytest.mark.parametrize("path", API_FILES, ids=_ids(API_FILES))
def test_api_workflow_types_links_and_values(path):
    api = _load(path)
    errors = []
    for nid, node in api.items():
        cls = node["class_type"]
        if cls not in SNAPSHOT:
            errors.append(f"node {nid}: unknown class {cls}")
            continue
        specs = {s.name: s for s in all_specs(SNAPSHOT[cls])}
        chosen = expand_specs(input_specs(SNAPSHOT[cls]), lambda s, n=node: n["inputs"].get(s.name, s.default))
        required = {s.name for s in chosen if s.section == "required"}
        missing = required - set(node["inputs"])
        if missing:
            errors.append(f"node {nid} ({cls}): required inputs missing {sorted(missing)}")
        for name, value in node["inputs"].items():
            if name not in specs:
                errors.append(f"node {nid} ({cls}): unknown input {name}")
            elif isinstance(value, list):
                src, slot = value
                if src not in api:
                    errors.append(f"node {nid} ({cls}).{name}: links to missing node {src}")
                    continue
                outputs = SNAPSHOT[api[src]["class_type"]]["output"]
                if not 0 <= slot < len(outputs):
                    errors.append(f"node {nid}.{name}: node {src} has no output {slot}")
                elif outputs[slot] != specs[name].type:
                    errors.append(f"node {nid} ({cls}).{name}: {outputs[slot]} from node {src} into {specs[name].type}")
            elif not specs[name].widget:
                errors.append(f"node {nid} ({cls}).{name}: socket input given a constant {value!r}")
            elif (why := check_value(cls, name, value)) is not None:
                errors.append(f"node {nid} ({cls}).{name}: {why}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", UI_FILES, ids=_ids(UI_FILES))
def test_ui_workflow_structure_links_and_values(path):
    ui = _load(path)
    assert ui["version"] == 0.4
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]), "duplicate node ids"
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(lk[0] for lk in ui["links"])
    notes = [n for n in ui["nodes"] if n["type"] in VIRTUAL_NODES]
    assert notes and "NON-COMMERCIAL" in notes[0]["widgets_values"][0]
    assert "smoke-models" in notes[0]["widgets_values"][0]
    errors = []
    for node in ui["nodes"]:
        for key in ("id", "type", "pos", "size", "order", "mode", "inputs", "outputs", "properties", "widgets_values"):
            if key not in node:
                errors.append(f"node {node.get('id')}: no '{key}'")
        cls = node["type"]
        if cls in VIRTUAL_NODES:
            continue
        if cls not in SNAPSHOT:
            errors.append(f"node {node['id']}: unknown class {cls}")
            continue
        assert (
            cls.startswith("Likeness_")
            or SNAPSHOT[cls]["python_module"] in ("nodes",)
            or SNAPSHOT[cls]["python_module"].startswith("comfy_extras")
        ), f"{cls} is neither ours nor core"
        layout = widget_layout(SNAPSHOT[cls], node["widgets_values"])
        if len(node["widgets_values"]) != len(layout):
            errors.append(
                f"node {node['id']} ({cls}): {len(node['widgets_values'])} widget values, schema has {len(layout)}"
            )
            continue
        for name, i in layout:
            if name is not None and (why := check_value(cls, name, node["widgets_values"][i])) is not None:
                errors.append(f"node {node['id']} ({cls}).{name}: {why}")
    for link_id, src, src_slot, dst, dst_slot, typ in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        if not (out["type"] == typ == SNAPSHOT[nodes[src]["type"]]["output"][src_slot]):
            errors.append(f"link {link_id}: type {typ} vs source output {out['type']}")
        if inp["link"] != link_id or link_id not in (out["links"] or []):
            errors.append(f"link {link_id}: not referenced by both ends")
        want = _spec(nodes[dst]["type"], inp["name"]).type
        if want != typ:
            errors.append(f"link {link_id}: {typ} into {nodes[dst]['type']}.{inp['name']} ({want})")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", UI_FILES, ids=_ids(UI_FILES))
def test_ui_twin_converts_to_its_api_file(path):
    api = _load(api_path(path))
    assert ui_to_api(_load(path), SNAPSHOT) == api


@pytest.mark.parametrize("path", API_FILES, ids=_ids(API_FILES))
def test_api_to_ui_is_deterministic_and_round_trips(path):
    api = _load(path)
    ui = api_to_ui(api, SNAPSHOT, notes="n", name=path.stem)
    assert ui == api_to_ui(api, SNAPSHOT, notes="n", name=path.stem)
    assert ui_to_api(ui, SNAPSHOT) == api
    groups = [g["bounding"] for g in ui["groups"]]
    for i, a in enumerate(groups):  # groups never overlap, so dragging one never drags another's nodes
        for b in groups[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1], (a, b)


def test_seed_widget_is_followed_by_control_after_generate_and_upload_value():
    api = {
        "1": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 5,
                "steps": 3,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["2", 0],
                "positive": ["3", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
            },
            "_meta": {"title": "KSampler"},
        },
        "2": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "a.safetensors"},
            "_meta": {"title": "Load Checkpoint"},
        },
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "x", "clip": ["2", 1]},
            "_meta": {"title": "CLIP Text Encode (Prompt)"},
        },
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
            "_meta": {"title": "Empty Latent Image"},
        },
        "5": {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "Load Image"}},
    }
    ui = api_to_ui(api, SNAPSHOT)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert nodes[1]["widgets_values"] == [5, "fixed", 3, 7.0, "euler", "normal", 1.0]
    assert nodes[5]["widgets_values"] == ["a.png", "image"]
    assert "title" not in nodes[1]  # default title = display name, as the editor saves it
    assert [i["name"] for i in nodes[1]["inputs"]] == ["model", "positive", "negative", "latent_image"]
    assert [lk[1:] for lk in ui["links"] if lk[3] == 1] == [
        [2, 0, 1, 0, "MODEL"],
        [3, 0, 1, 1, "CONDITIONING"],
        [3, 0, 1, 2, "CONDITIONING"],
        [4, 0, 1, 3, "LATENT"],
    ]
    assert ui_to_api(ui, SNAPSHOT) == api


def test_linked_widget_becomes_a_widget_input_and_keeps_a_placeholder_value():
    sweep = _load(ui_path(ROOT, "likeness_attribute_sweep"))
    latent = next(n for n in sweep["nodes"] if n["type"] == "EmptyLatentImage")
    assert latent["inputs"] == [
        {"name": "batch_size", "type": "INT", "widget": {"name": "batch_size"}, "link": latent["inputs"][0]["link"]}
    ]
    assert len(latent["widgets_values"]) == 3
    assert ui_to_api(sweep, SNAPSHOT)[str(latent["id"])]["inputs"]["batch_size"][1] == 2


def test_conversion_errors_name_the_node():
    with pytest.raises(LikenessError, match="node 7: node class 'NoSuchNode'"):
        api_to_ui({"7": {"class_type": "NoSuchNode", "inputs": {}}}, SNAPSHOT)
    ui = _load(UI_FILES[0])
    node = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    node["widgets_values"] = node["widgets_values"][:3]
    with pytest.raises(LikenessError, match=rf"node {node['id']} \(KSampler\) has 3 widget values"):
        ui_to_api(ui, SNAPSHOT)
    node["mode"] = 4
    with pytest.raises(LikenessError, match="bypassed"):
        ui_to_api(ui, SNAPSHOT)


def test_snapshot_has_tooltips_for_every_likeness_input_and_no_machine_file_lists():
    ours = [c for c in SNAPSHOT if c.startswith("Likeness_")]
    assert ours
    missing = [f"{c}.{s.name}" for c in ours for s in all_specs(SNAPSHOT[c]) if not s.options.get("tooltip")]
    assert not missing, f"inputs without tooltip: {missing}"
    for cls, entry in SNAPSHOT.items():
        for spec in input_specs(entry):
            if is_file_list(cls, spec):
                assert spec.choices == [], f"{cls}.{spec.name}: snapshot must not list this machine's files"


@pytest.mark.parametrize("path", UI_FILES, ids=_ids(UI_FILES))
def test_templates_name_real_models_with_download_metadata_and_a_thumbnail(path):
    ui = _load(path)
    smoke = set(SMOKE_NAMES.values())
    for node in ui["nodes"]:
        values = [v for v in node.get("widgets_values") or [] if isinstance(v, str)]
        assert not smoke & set(values), f"node {node['id']} names a smoke model: {values}"
        named = [SHIPPED_MODELS[v] for v in values if v in SHIPPED_MODELS]
        want = [{"name": m.name, "url": m.url, "directory": m.directory} for m in named]
        assert node["properties"].get("models", []) == want, f"node {node['id']} ({node['type']}) model metadata"
        for m in named:  # the Read me note says where each file comes from
            assert m.url in ui["nodes"][0]["widgets_values"][0] and m.licence in ui["nodes"][0]["widgets_values"][0]
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file() and thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb.name}: no JPEG thumbnail"


def test_smoke_prompt_substitutes_only_model_names():
    api = _load(API_FILES[0])
    smoke = smoke_prompt(api)
    changed = {
        (nid, name)
        for nid, node in api.items()
        for name, value in node["inputs"].items()
        if smoke[nid]["inputs"][name] != value
    }
    assert changed and all(api[nid]["class_type"] == "CheckpointLoaderSimple" for nid, _ in changed)
    assert api == _load(API_FILES[0]), "the input prompt must not be modified"


def test_dynamic_combo_children_follow_their_combo_in_both_formats():
    entry = SNAPSHOT["Likeness_EditAttributes"]
    edits = _spec("Likeness_EditAttributes", "edits")
    assert edits.type == DYNAMIC_COMBO and edits.choices == [str(n) for n in range(1, 9)] and edits.default == "1"
    assert [s.name for s in edits.children("2")] == [
        f"edits.{f}_{i}" for i in (1, 2) for f in ("attribute", "strength", "rows")
    ]
    values = ["2", "age", 2.0, "default", "smile", -1.0, "0-7", "", "offset"]
    layout = widget_layout(entry, values)
    assert [name for name, _ in layout] == [
        "edits",
        *[s.name for s in edits.children("2")],
        "extra_edits",
        "ganspace_mode",
    ]
    assert [name for name, _ in widget_layout(entry)][:5] == ["edits", "edits.attribute_1", "edits.strength_1",
                                                               "edits.rows_1", "extra_edits"]  # fmt: skip
    api = {
        "1": {"class_type": "Likeness_EditAttributes", "inputs": dict(zip([n for n, _ in layout], values, strict=True)),
              "_meta": {"title": "Likeness Edit Attributes"}},
    }  # fmt: skip
    api["1"]["inputs"]["directions"] = ["3", 0]
    api["3"] = {"class_type": "Likeness_LoadDirections", "inputs": {"direction_set": "s"}, "_meta": {"title": "D"}}
    ui = api_to_ui(api, SNAPSHOT, name="dyn")
    node = next(n for n in ui["nodes"] if n["type"] == "Likeness_EditAttributes")
    assert node["widgets_values"] == values
    assert ui_to_api(ui, SNAPSHOT) == api
