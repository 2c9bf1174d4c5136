"""Safe loading: formats by content, refusal of code-carrying pickles, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from likeness.models.errors import CheckpointError, LikenessError, MissingModelError
from likeness.models.files.checkpoints import flatten, identify, load_file, validate_shapes

_CANARY = []


def _side_effect(path):  # referenced by the malicious pickle below
    _CANARY.append(path)
    with open(path, "w") as fh:
        fh.write("pwned")
    return {}


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_side_effect, (self.path,))


def test_loads_each_format_by_content_not_name(tmp_path):
    t = {"a": torch.arange(6.0).reshape(2, 3)}
    save_file(t, tmp_path / "weights.bin")  # safetensors under a misleading name
    torch.save({"x": {"y": torch.ones(2)}}, tmp_path / "model.safetensors")  # torch zip, misleading name
    np.save(tmp_path / "d.npy", np.arange(4, dtype=np.float64))
    (tmp_path / "d.json").write_text('{"k": [[1, 2]]}')

    assert torch.equal(load_file(tmp_path / "weights.bin")["a"], t["a"])
    assert torch.equal(load_file(tmp_path / "model.safetensors")["x"]["y"], torch.ones(2))
    assert load_file(tmp_path / "d.npy").dtype == np.float64
    assert load_file(tmp_path / "d.json") == {"k": [[1, 2]]}


def test_legacy_pickle_format_with_tensors_loads(tmp_path):
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.full((3,), 2.0)}, p, _use_new_zipfile_serialization=False)
    assert torch.equal(load_file(p)["w"], torch.full((3,), 2.0))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = tmp_path / "marker.txt"
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(str(marker))}, p, _use_new_zipfile_serialization=zip_format)
    _CANARY.clear()
    with pytest.raises(CheckpointError, match="Refusing to load .*weights_only=True"):
        load_file(p)
    assert not marker.exists()
    assert _CANARY == []


def test_raw_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    marker = tmp_path / "m2.txt"
    p.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    with pytest.raises(CheckpointError):
        load_file(p)
    assert not marker.exists()


def test_truncated_files_give_clear_errors(tmp_path):
    src = tmp_path / "full.pt"
    torch.save({"w": torch.randn(256, 256)}, src)
    data = src.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or (damaged|corrupt)"):
        load_file(cut)

    st = tmp_path / "full.safetensors"
    save_file({"w": torch.randn(64, 64)}, st)
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_file(cut_st)


def test_empty_missing_and_unknown_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_file(tmp_path / "empty.pt")
    with pytest.raises(MissingModelError, match="does not exist"):
        load_file(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="not a checkpoint Likeness can read"):
        load_file(tmp_path / "text.pt")
    assert issubclass(CheckpointError, LikenessError) and issubclass(MissingModelError, LikenessError)


def test_flatten_nested_dicts_and_lists():
    flat = flatten({"a": {"b": torch.zeros(1)}, "bank": [torch.ones(2), torch.ones(3)], "opts": {"lr": 0.1}})
    assert sorted(flat) == ["a.b", "bank.0", "bank.1"]


def test_validate_shapes_names_first_mismatches_and_file_identity():
    expected = {"w_proj.proj_0.weight": (768, 2048), "wplus_adapter.1.to_k_wplus.weight": (320, 768)}
    sdxl_like = {
        "w_proj.proj_0.weight": torch.zeros(2048, 2048),
        "wplus_adapter.1.to_k_wplus.weight": torch.zeros(640, 2048),
    }
    with pytest.raises(CheckpointError) as err:
        validate_shapes(sdxl_like, expected, what="W+ adapter for SD1.5", source="x.bin")
    msg = str(err.value)
    assert "x.bin is not a W+ adapter for SD1.5 checkpoint" in msg
    assert "w_proj.proj_0.weight: file (2048, 2048) vs expected (768, 2048)" in msg
    assert "W+ adapter for SDXL" in msg
    validate_shapes({k: torch.zeros(s) for k, s in expected.items()}, expected, what="x", source="y")


def test_identify_common_layouts():
    assert "empty" in identify({})
    assert "e4e" in identify({"state_dict.encoder.styles.0.linear.weight": torch.zeros(1)})
    sd = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768)}
    assert "SD1.5" in identify(sd)
    assert "unknown layout" in identify({"foo.bar": torch.zeros(1)})
