"""Sweep spec expansion: cartesian order, labels, stable ids, node addressing and clear errors."""

from __future__ import annotations

import copy
import json

import pytest

from likeness.tools.batch.spec import SpecError, expand_spec, find_node, load_spec

WORKFLOW = {
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "x.safetensors"},
        "_meta": {"title": "Load Checkpoint"},
    },
    "12": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load face"}},
    "10": {
        "class_type": "LikenessEdit",
        "inputs": {"model": ["4", 0], "image": ["12", 0], "strength_1": 0.0},
        "_meta": {"title": "Likeness edit"},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 0, "steps": 20, "model": ["10", 0]},
        "_meta": {"title": "KSampler"},
    },
    "9": {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "x"},
        "_meta": {"title": "Save Image"},
    },
}


@pytest.fixture()
def faces(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "bob.png").write_bytes(b"bob-bytes")
    (folder / "alice.jpg").write_bytes(b"alice-bytes")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _spec(faces_folder=None):
    spec = {
        "sweep": [{"node": "Likeness edit", "input": "strength_1", "values": [-2, 0, 2], "name": "age"}],
        "seeds": {"node": "KSampler", "input": "seed", "values": [1, 2]},
        "overrides": [{"node": "3", "input": "steps", "value": 4}],
    }
    if faces_folder is not None:
        spec["faces"] = {"folder": str(faces_folder), "node": "Load face", "input": "image"}
    return spec


def test_cartesian_order_labels_and_substitution(faces):
    original = copy.deepcopy(WORKFLOW)
    points = expand_spec(WORKFLOW, _spec(faces))
    assert WORKFLOW == original  # not mutated
    assert len(points) == 12
    assert [p.index for p in points] == list(range(12))
    assert [p.label for p in points[:7]] == [
        "face=alice_age=-2_seed=1",
        "face=alice_age=-2_seed=2",
        "face=alice_age=+0_seed=1",
        "face=alice_age=+0_seed=2",
        "face=alice_age=+2_seed=1",
        "face=alice_age=+2_seed=2",
        "face=bob_age=-2_seed=1",
    ]
    p = points[4]
    assert p.prompt["10"]["inputs"]["strength_1"] == 2
    assert p.prompt["3"]["inputs"]["seed"] == 1
    assert p.prompt["3"]["inputs"]["steps"] == 4  # override
    assert p.prompt["10"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert p.face is not None and p.face.path.name == "alice.jpg"
    assert p.face.value.startswith("likeness_batch/alice_") and p.face.value.endswith(".jpg")
    assert p.prompt["12"]["inputs"]["image"] == p.face.value
    assert p.inputs == {"12.image": p.face.value, "10.strength_1": 2, "3.seed": 1}
    assert len({q.point_id for q in points}) == 12


def test_point_ids_are_stable_when_values_are_added():
    before = {p.label: p.point_id for p in expand_spec(WORKFLOW, _spec())}
    spec = _spec()
    spec["seeds"]["values"] = [1, 2, 3]
    after = {p.label: p.point_id for p in expand_spec(WORKFLOW, spec)}
    assert len(after) == 9
    assert {k: after[k] for k in before} == before
    assert [p.point_id for p in expand_spec(WORKFLOW, _spec())] == list(before.values())


def test_no_sweep_is_one_point_and_seeds_list_and_strings():
    assert [p.label for p in expand_spec(WORKFLOW, {})] == ["point"]
    spec = {
        "seeds": [{"node": "3", "input": "seed", "values": [7]}],
        "sweep": [{"node": "4", "input": "ckpt_name", "values": ["a b.safetensors", "c"]}],
    }
    assert [p.label for p in expand_spec(WORKFLOW, spec)] == ["ckpt_name=a-b.safetensors_seed=7", "ckpt_name=c_seed=7"]


def test_addressing_by_id_title_and_class():
    assert find_node(WORKFLOW, "10") == "10"
    assert find_node(WORKFLOW, 10) == "10"
    assert find_node(WORKFLOW, "Likeness edit") == "10"
    assert find_node(WORKFLOW, "LikenessEdit") == "10"  # class_type when no title matches


def test_ambiguous_and_missing_nodes_are_clear_errors():
    wf = copy.deepcopy(WORKFLOW)
    wf["11"] = copy.deepcopy(wf["10"])
    with pytest.raises(SpecError, match=r"'Likeness edit' is ambiguous.*\['10', '11'\]"):
        find_node(wf, "Likeness edit")
    with pytest.raises(SpecError, match=r"no node 'Ksampler'.*3 \('KSampler', KSampler\)"):
        find_node(WORKFLOW, "Ksampler")


def test_bad_input_names_and_values_are_clear_errors(faces):
    spec = {"sweep": [{"node": "KSampler", "input": "sead", "values": [1]}]}
    with pytest.raises(SpecError, match=r"sweep\[0\]: node 3 \(KSampler\) has no input 'sead'.*'seed'"):
        expand_spec(WORKFLOW, spec)
    with pytest.raises(SpecError, match='non-empty "values"'):
        expand_spec(WORKFLOW, {"sweep": [{"node": "3", "input": "seed", "values": []}]})
    with pytest.raises(SpecError, match=r"repeats values \['1'\]"):
        expand_spec(WORKFLOW, {"seeds": {"node": "3", "input": "seed", "values": [1, 2, 1]}})
    with pytest.raises(SpecError, match=r"\['3.seed'\] are swept more than once"):
        expand_spec(
            WORKFLOW,
            {
                "sweep": [{"node": "3", "input": "seed", "values": [1]}],
                "seeds": {"node": "3", "input": "seed", "values": [2]},
            },
        )
    with pytest.raises(SpecError, match=r"unknown sweep spec keys \['sweeps'\]"):
        expand_spec(WORKFLOW, {"sweeps": []})
    with pytest.raises(SpecError, match='overrides\\[0\\] needs a "value"'):
        expand_spec(WORKFLOW, {"overrides": [{"node": "3", "input": "seed"}]})
    empty = faces.parent / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="no images"):
        expand_spec(WORKFLOW, {"faces": {"folder": str(empty), "node": "12", "input": "image"}})


def test_ui_workflow_is_rejected_with_a_hint():
    with pytest.raises(SpecError, match="Export \\(API\\)"):
        expand_spec({"nodes": [], "links": [], "version": 0.4}, {})
    with pytest.raises(SpecError, match="not an API-format workflow"):
        expand_spec({"3": {"inputs": {}}}, {})


def test_spec_file_relative_faces_folder(tmp_path, faces):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"faces": {"folder": "faces", "node": "12", "input": "image"}}))
    spec, base = load_spec(spec_path)
    points = expand_spec(WORKFLOW, spec, base)
    assert [p.label for p in points] == ["face=alice", "face=bob"]
    with pytest.raises(SpecError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        load_spec(tmp_path / "bad.json")
