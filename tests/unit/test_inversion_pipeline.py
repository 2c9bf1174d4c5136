"""The one photo -> W+ pipeline (models/inversion/pipeline.py): whitening resolution and invert_face."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from likeness.models.errors import LikenessError, MissingModelError
from likeness.models.inversion import pipeline
from likeness.models.inversion.align import WPLUS_ADAPTER, align_face, e4e_input_tensor
from likeness.models.inversion.pipeline import Whitening, invert_face, resolve_whitening
from likeness.models.inversion.whitening import hull_background_mask, whiten_background

_spec = importlib.util.spec_from_file_location("alignment_helpers", Path(__file__).with_name("test_alignment.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


class FakeInverter:
    """Records what it was asked to encode; W+ = mean of the input per channel, broadcast."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def encode(self, x: torch.Tensor, progress=None) -> torch.Tensor:
        self.seen.append(x.clone())
        if progress is not None:
            progress(1, 1)
        return x.mean(dim=(2, 3))[:, :1, None].expand(x.shape[0], 18, 512).double()


def test_auto_whitens_only_the_wplus_recipe_and_prefers_parsenet(tmp_path, monkeypatch):
    search = {"face_parsing": [tmp_path]}
    auto = resolve_whitening("auto", "wplus_adapter", search)
    assert (auto.method, auto.parsenet) == ("landmark_hull", None) and "no face_parsing/" in auto.reason
    assert resolve_whitening("auto", "e4e_official", search).method == "none"
    (tmp_path / "parse_multi_iter_90000.pth").write_bytes(b"x")
    monkeypatch.setattr(pipeline, "load_parsenet", lambda path: ("net", path))
    found = resolve_whitening("auto", "wplus_adapter", search)
    assert found.method == "parsenet" and found.parsenet == ("net", tmp_path / "parse_multi_iter_90000.pth")
    assert found.parsenet_path == tmp_path / "parse_multi_iter_90000.pth" and str(tmp_path) in found.reason


def test_explicit_choices_are_honoured_or_refused(tmp_path):
    assert resolve_whitening("landmark_hull", "e4e_official", {}) == Whitening("landmark_hull", "chosen explicitly")
    assert resolve_whitening("none", "wplus_adapter", {}).method == "none"
    with pytest.raises(MissingModelError, match="parse_multi_iter_90000.pth"):
        resolve_whitening("parsenet", "wplus_adapter", {"face_parsing": [tmp_path]})
    with pytest.raises(LikenessError, match="Unknown whitening 'white'"):
        resolve_whitening("white", "wplus_adapter", {})


def test_invert_face_aligns_whitens_and_encodes_on_the_cpu():
    img = helpers.smooth_image(300, 300)
    lm = helpers.synthetic_lm68(150, 140, 50)
    inverter = FakeInverter()
    plain = invert_face(inverter, img, lm, "wplus_adapter", Whitening("none", "test"))
    aligned = align_face(img, lm, WPLUS_ADAPTER)
    np.testing.assert_array_equal(plain.aligned.image, aligned.image)
    torch.testing.assert_close(inverter.seen[0], e4e_input_tensor(aligned, WPLUS_ADAPTER), rtol=0, atol=0)
    assert plain.wplus.shape == (1, 18, 512) and plain.wplus.dtype == torch.float32 and plain.whitening == "none"
    hull = invert_face(inverter, img, lm, WPLUS_ADAPTER, Whitening("landmark_hull", "test"))
    expected = whiten_background(e4e_input_tensor(aligned, WPLUS_ADAPTER), hull_background_mask(aligned.landmarks, 512))
    torch.testing.assert_close(inverter.seen[1], expected, rtol=0, atol=0)
    assert hull.whitening == "landmark_hull" and torch.equal(hull.e4e_input, expected)
    shown = hull.e4e_input_uint8()
    assert shown.shape == (256, 256, 3) and shown.dtype == torch.uint8 and int(shown.max()) == 255
    with pytest.raises(LikenessError, match="Unknown alignment recipe 'nope'"):
        invert_face(inverter, img, lm, "nope", Whitening("none", "test"))
