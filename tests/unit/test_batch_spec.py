"""Sweep spec expansion: cartesian order, labels, stable ids, node addressing and clear errors."""

from __future__ import annotations

import copy
import json

import pytest
from batch_fixtures import WORKFLOW, assert_clear  # tests/unit is on sys.path

from likeness.tools.batch.spec import SpecError, expand_spec, find_node, load_spec


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
    with pytest.raises(SpecError, match=r"'Likeness edit' is ambiguous.*\(ids 10, 11\)"):
        find_node(wf, "Likeness edit")
    with pytest.raises(SpecError, match=r"no node 'Ksampler'.*3 \('KSampler', KSampler\)"):
        find_node(WORKFLOW, "Ksampler")


def test_bad_input_names_and_values_are_clear_errors(faces):
    spec = {"sweep": [{"node": "KSampler", "input": "sead", "values": [1]}]}
    with pytest.raises(
        SpecError, match=r"sweep\[0\]: node 3 \(KSampler\) has no input 'sead'; its inputs: model, seed, steps$"
    ):
        expand_spec(WORKFLOW, spec)
    with pytest.raises(SpecError, match='non-empty "values"'):
        expand_spec(WORKFLOW, {"sweep": [{"node": "3", "input": "seed", "values": []}]})
    with pytest.raises(SpecError, match=r"repeats values 1; each point must differ"):
        expand_spec(WORKFLOW, {"seeds": {"node": "3", "input": "seed", "values": [1, 2, 1]}})
    with pytest.raises(SpecError, match=r"inputs 3.seed are swept more than once"):
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


def test_face_subfolder_must_stay_inside_the_input_folder(faces):
    for bad in ("../evil", "a/../../b", "C:/x", "./x"):
        spec = {"faces": {"folder": str(faces), "node": "12", "input": "image", "subfolder": bad}}
        with pytest.raises(SpecError, match=r"faces.subfolder .* must be a folder inside the server's input folder"):
            expand_spec(WORKFLOW, spec)
    spec = {"faces": {"folder": str(faces), "node": "12", "input": "image", "subfolder": "/people/set1/"}}
    assert expand_spec(WORKFLOW, spec)[0].face.value.startswith("people/set1/alice_")


def test_point_count_is_bounded_before_expansion():
    spec = {
        "sweep": [{"node": "10", "input": "strength_1", "values": list(range(101))}],
        "seeds": {"node": "3", "input": "seed", "values": list(range(100))},
    }
    with pytest.raises(SpecError, match=r"expands to 10100 points \(101 strength_1 x 100 seed\); .* at most 10000"):
        expand_spec(WORKFLOW, spec)


def test_long_lists_in_errors_are_cut_at_twenty_items():
    wf = {str(i): {"class_type": f"Node{i}", "inputs": {f"in{j}": j for j in range(30)}} for i in range(40)}
    with pytest.raises(SpecError) as err:
        find_node(wf, "missing")
    assert str(err.value).endswith(", ... and 20 more") and str(err.value).count("('Node") == 20
    with pytest.raises(SpecError) as err:
        expand_spec(wf, {"sweep": [{"node": "3", "input": "nope", "values": [1]}]})
    assert "... and 10 more" in str(err.value) and "in29" not in str(err.value)
    values = list(range(25)) * 2
    with pytest.raises(SpecError) as err:
        expand_spec(wf, {"sweep": [{"node": "3", "input": "in1", "values": values}]})
    assert "... and 5 more" in str(err.value)


def test_every_spec_error_reads_clearly(faces):
    wf = {str(i): {"class_type": f"Node{i}", "inputs": {f"in{j}": j for j in range(30)}} for i in range(40)}
    bad_specs = [
        {"sweep": [{"node": "missing", "input": "in1", "values": [1]}]},
        {"sweep": [{"node": "3", "input": "nope", "values": [1]}]},
        {"sweep": [{"node": "3", "input": "in1", "values": list(range(30)) * 2}]},
        {"sweep": [{"node": "3", "input": "in1", "values": []}]},
        {
            "sweep": [{"node": "3", "input": "in1", "values": list(range(200))}],
            "seeds": {"node": "4", "input": "in1", "values": list(range(200))},
        },
        {"faces": {"folder": str(faces), "node": "3", "input": "in1", "subfolder": "../x"}},
        {"sweeps": []},
    ]
    for spec in bad_specs:
        with pytest.raises(SpecError) as err:
            expand_spec(wf, spec)
        assert_clear(str(err.value))


@pytest.mark.parametrize(
    "bad",
    ["try the the other backend", "it is not a e4e file", "nodes: " + ", ".join(str(i) for i in range(25))],
)
def test_the_message_checker_catches_each_fault(bad):
    with pytest.raises(AssertionError):
        assert_clear(bad)
    assert_clear("it is not an e4e file; nodes: " + ", ".join(str(i) for i in range(20)) + ", ... and 5 more")
