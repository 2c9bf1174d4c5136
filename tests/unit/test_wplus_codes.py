"""W+ identity files: round trip with labels and provenance, official .pth codes, clear errors."""

from __future__ import annotations

import pytest
import torch

from likeness.models.errors import CheckpointError, LikenessError
from likeness.models.inversion.codes import WPlusCodes, load_wplus, save_wplus


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


def test_empty_batch_is_allowed_for_the_pass_through_policy():
    w = WPlusCodes(torch.zeros(0, 18, 512), (), {}, ("image 0: no face",))
    assert w.batch == 0 and w.warnings == ("image 0: no face",)
