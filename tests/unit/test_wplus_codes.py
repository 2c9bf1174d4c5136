"""W+ identity files: round trip with labels and provenance, official .pth codes, clear errors."""

from __future__ import annotations

import pytest
import torch

from likeness.models.errors import CheckpointError, InputError, LikenessError
from likeness.models.inversion.codes import WPlusCodes, load_wplus, sanitize_prefix, save_wplus, wplus_input


def test_round_trip_keeps_codes_labels_and_provenance(tmp_path):
    codes = torch.randn(3, 18, 512)
    w = WPlusCodes(codes, ("age=-2", "age=+0", "age=+2"), {"recipe": "wplus_adapter", "source_sha256": ["ab12"]})
    path = save_wplus(tmp_path / "id.safetensors", w)
    back = load_wplus(path)
    assert torch.equal(back.codes, codes)
    assert back.labels == w.labels
    assert back.meta["recipe"] == "wplus_adapter" and back.meta["source_sha256"] == ["ab12"]


def test_official_pth_code_loads(tmp_path):
    code = torch.randn(1, 18, 512)
    torch.save(code, tmp_path / "1.pth")
    back = load_wplus(tmp_path / "1.pth")
    assert back.batch == 1 and torch.equal(back.codes, code) and back.labels == ("#0",)


def test_shapes_are_checked(tmp_path):
    with pytest.raises(LikenessError, match=r"must be \[B,18,512\]"):
        WPlusCodes(torch.zeros(2, 14, 512))
    with pytest.raises(LikenessError, match="2 labels for 3"):
        WPlusCodes(torch.zeros(3, 18, 512), ("a", "b"))
    torch.save(torch.zeros(1, 14, 512), tmp_path / "g256.pth")
    with pytest.raises(CheckpointError, match=r"shape \(1, 14, 512\), not a W\+ code"):
        load_wplus(tmp_path / "g256.pth")
    torch.save({"a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds no W\\+ code"):
        load_wplus(tmp_path / "other.pt")


def test_a_batch_is_never_empty_and_absent_items_hold_zeros():
    with pytest.raises(LikenessError, match="needs at least one code"):
        WPlusCodes(torch.zeros(0, 18, 512))
    codes = torch.randn(3, 18, 512)
    w = WPlusCodes(codes, ("image 0", "image 1 (no face)", "image 2"), {}, ("image 1: no face",), absent=(1,))
    assert w.batch == 3 and w.present == (0, 2) and w.absent == (1,)
    assert torch.equal(w.codes[1], torch.zeros(18, 512)) and torch.equal(w.codes[2], codes[2])
    kept = w.only_present("Save W+ input 'wplus'")
    assert kept.batch == 2 and kept.labels == ("image 0", "image 2") and kept.absent == ()
    edited = w.with_codes(w.codes + 1.0, w.labels)
    assert edited.absent == (1,) and torch.equal(edited.codes[1], torch.zeros(18, 512))  # absent stays absent
    with pytest.raises(LikenessError, match="outside the batch"):
        WPlusCodes(codes, absent=(3,))


def test_nothing_present_is_refused_where_codes_are_needed(tmp_path):
    w = WPlusCodes(torch.zeros(2, 18, 512), (), {}, ("image 0: no face", "image 1: no face"), absent=(0, 1))
    with pytest.raises(InputError, match=r"^Save W\+ input 'wplus': the W\+ input holds no code, only 2 absent"):
        w.only_present("Save W+ input 'wplus'")
    with pytest.raises(InputError, match="holds no code"):
        save_wplus(tmp_path / "none.safetensors", w)
    assert not list(tmp_path.iterdir())  # never a [0,18,512] file


def test_save_writes_only_present_codes_atomically(tmp_path):
    codes = torch.randn(2, 18, 512)
    w = WPlusCodes(codes, ("image 0", "image 1 (no face)"), {"whitening": "landmark_hull"}, absent=(1,))
    path = save_wplus(tmp_path / "id.safetensors", w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.safetensors"]  # no temporary file left
    back = load_wplus(path)
    assert back.batch == 1 and back.labels == ("image 0",) and torch.equal(back.codes[0], codes[0])
    assert back.meta["whitening"] == "landmark_hull" and back.meta["file"] == "id.safetensors"


@pytest.mark.parametrize(
    ("value", "message"),
    [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value"), (1e30, r"W\+ value 1e\+30")],
)
def test_damaged_files_are_refused_naming_the_file(tmp_path, value, message):
    from safetensors.torch import save_file

    codes = torch.randn(1, 18, 512)
    codes[0, 2, 7] = value
    save_file({"wplus": codes}, str(tmp_path / "bad.safetensors"), metadata={"format": "likeness.wplus.v1"})
    with pytest.raises(CheckpointError, match=message) as err:
        load_wplus(tmp_path / "bad.safetensors")
    assert str(tmp_path / "bad.safetensors") in str(err.value) and "code 0, row 2, column 7" in str(err.value)
    torch.save(codes * (1e30 if value == 1e30 else 1.0), tmp_path / "bad.pth")  # the official .pth form too
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_wplus(tmp_path / "bad.pth")
    with pytest.raises(LikenessError, match=message):
        WPlusCodes(codes)


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("labels", "not json", r"metadata field 'labels' is not valid JSON \(Expecting value at character 0\)"),
        ("labels", "5", r"metadata field 'labels' holds an int \('5'\), not a JSON list of strings"),
        ("labels", "[1, 2]", r"metadata field 'labels' must list strings"),
        ("labels", '["a", "b"]', r"metadata field 'labels' has 2 labels for 1 codes"),
        ("meta", "[1, 2]", r"metadata field 'meta' holds a list \('\[1, 2\]'\), not a JSON object"),
        ("meta", "{", r"metadata field 'meta' is not valid JSON"),
        ("format", "something.else", r"metadata field 'format' is 'something.else'"),
    ],
)
def test_every_metadata_field_is_validated_naming_file_and_field(tmp_path, field, text, message):
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"wplus": torch.zeros(1, 18, 512)}, str(path), metadata={field: text})
    with pytest.raises(CheckpointError, match=message) as err:
        load_wplus(path)
    assert str(path) in str(err.value)


def test_wplus_input_checks_what_a_node_receives():
    w = WPlusCodes(torch.randn(1, 18, 512), meta={"file": "a.safetensors"})
    assert wplus_input(w, "x") is w
    assert wplus_input(torch.zeros(18, 512), "x").batch == 1
    w.codes[0, 0, 0] = float("nan")  # a tensor changed in place after the checks
    with pytest.raises(InputError, match=r"^Apply W\+ Adapter input 'wplus' \(file a.safetensors\): .* 1 NaN"):
        wplus_input(w, "Apply W+ Adapter input 'wplus'")
    with pytest.raises(InputError, match="got a dict, not Likeness W"):
        wplus_input({"codes": 1}, "x")
    with pytest.raises(InputError, match=r"shape \(0, 18, 512\) is not a W\+ code"):
        wplus_input(torch.zeros(0, 18, 512), "x")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("identity", "identity"),
        ("tests/../test identity:1", "tests/test identity_1"),
        ("a\x00b", "a_b"),
        ("", "identity"),
        ("../..", "identity"),
        ("CON", "_CON"),
        ("sub/nul.txt", "sub/_nul.txt"),
        ("x" * 1000, "x" * 100),
        ("é" * 300, "é" * 50),
        ("/".join("abcdefghijk"), "d/e/f/g/h/i/j/k"),
    ],
)
def test_save_names_are_sanitised_before_safetensors_sees_them(tmp_path, prefix, expected):
    name = sanitize_prefix(prefix)
    assert name == expected
    path = tmp_path / f"{name}_00001_.safetensors"
    save_wplus(path, WPlusCodes(torch.zeros(1, 18, 512)))  # writable: no NUL, no over-long part
    assert path.is_file()
