"""Face/part masks: geometry, grow/shrink, feather, batching (synthetic faces, no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from likeness.models.errors import LikenessError
from likeness.models.face import Face, batch_face_masks, face_mask, part_masks
from likeness.models.face.masks import ellipse_mask, polygon_mask
from likeness.models.mask_ops import feather_mask


def _synthetic_68(cx=100.0, cy=110.0, s=60.0) -> np.ndarray:
    """A plausible iBUG-68 layout (face ~2s wide) good enough for mask geometry."""
    lm = np.zeros((68, 2))
    t = np.linspace(math.pi, 2 * math.pi, 17)  # jaw: lower half ellipse, viewer-left to right
    lm[0:17] = np.stack([cx + s * np.cos(t + math.pi) * -1, cy - s * 0.1 - s * np.sin(t) * 1.1], 1)
    lm[0:17, 0] = cx + s * np.cos(np.linspace(math.pi, 0, 17))
    lm[17:22] = np.stack([np.linspace(cx - 0.8 * s, cx - 0.15 * s, 5), np.full(5, cy - 0.55 * s)], 1)
    lm[22:27] = np.stack([np.linspace(cx + 0.15 * s, cx + 0.8 * s, 5), np.full(5, cy - 0.55 * s)], 1)
    lm[27:31] = np.stack([np.full(4, cx), np.linspace(cy - 0.4 * s, cy + 0.05 * s, 4)], 1)
    lm[31:36] = np.stack([np.linspace(cx - 0.2 * s, cx + 0.2 * s, 5), np.full(5, cy + 0.12 * s)], 1)
    for base, ex in ((36, cx - 0.4 * s), (42, cx + 0.4 * s)):
        a = np.linspace(0, 2 * math.pi, 6, endpoint=False)
        lm[base : base + 6] = np.stack([ex + 0.18 * s * np.cos(a), cy - 0.3 * s + 0.07 * s * np.sin(a)], 1)
    a = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    lm[48:60] = np.stack([cx + 0.35 * s * np.cos(a), cy + 0.45 * s + 0.12 * s * np.sin(a)], 1)
    lm[60:68] = np.stack([cx + 0.25 * s * np.cos(a[:8]), cy + 0.45 * s + 0.05 * s * np.sin(a[:8])], 1)
    return lm


def _face(with68=True) -> Face:
    lm = _synthetic_68()
    kps = [lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]
    return Face(bbox=[40, 40, 160, 180], score=0.9, kps=kps, landmarks68=lm if with68 else None)


H, W = 220, 200


def test_polygon_and_ellipse_areas():
    sq = polygon_mask([[10, 10], [49, 10], [49, 49], [10, 49], [30, 30]], 64, 64)
    assert sq.shape == (64, 64) and sq.dtype == torch.float32 and sq.sum().item() == 40 * 40
    e = ellipse_mask((100, 100), (30, 10), 0.0, 200, 200)
    assert abs(e.sum().item() - math.pi * 300) / (math.pi * 300) < 0.03
    rot = ellipse_mask((100, 100), (30, 10), math.pi / 2, 200, 200)
    assert rot[100, 100 + 25] == 0 and rot[100 + 25, 100] == 1  # long axis now vertical


def test_face_region_variants():
    f68 = face_mask(_face(), H, W)
    hull_area = f68.sum().item()
    assert 0.5 * 120 * 140 < hull_area < 120 * 140  # inside the box, most of it
    ell = face_mask(_face(with68=False), H, W)
    assert abs(ell.sum().item() - math.pi * 60 * 70) / (math.pi * 60 * 70) < 0.03
    forehead = face_mask(_face(), H, W, forehead=0.3)
    assert forehead.sum().item() > hull_area and bool((forehead >= f68).all())
    quad = face_mask(_face(), H, W, quad=[[20, 20], [20, 120], [120, 120], [120, 20]])
    assert quad.sum().item() == 101 * 101
    with pytest.raises(LikenessError, match=r"quad must have shape \[4,2\]"):
        face_mask(_face(), H, W, quad=[[0, 0], [1, 1]])
    with pytest.raises(LikenessError, match="Unknown mask region"):
        face_mask(_face(), H, W, region="ears")


@pytest.mark.parametrize("with68", [True, False])
def test_parts_inside_face_and_disjoint(with68):
    face = _face(with68)
    region = face_mask(face, H, W)
    parts = part_masks(face, H, W)
    assert list(parts) == ["eye_left", "eye_right", "nose", "mouth"]
    for name, m in parts.items():
        assert m.sum() > 20, name
        inside = (m * region).sum() / m.sum()
        assert inside > 0.97, (name, float(inside))
    # viewer-left eye lies left of the viewer-right eye
    cols = torch.arange(W, dtype=torch.float32)
    lx = (parts["eye_left"].sum(0) * cols).sum() / parts["eye_left"].sum()
    rx = (parts["eye_right"].sum(0) * cols).sum() / parts["eye_right"].sum()
    assert lx < rx
    assert (parts["eye_left"] * parts["eye_right"]).sum() == 0
    union = face_mask(face, H, W, region="parts")
    assert union.sum() <= sum(m.sum() for m in parts.values()) and union.sum() >= parts["mouth"].sum()


def test_feather_range_and_monotone_edge():
    m = face_mask(_face(), H, W, grow=4)
    soft = feather_mask(m, 9)
    assert soft.min() >= 0 and soft.max() <= 1
    assert 0 < ((soft > 0.02) & (soft < 0.98)).sum() and abs(soft.sum() - m.sum()) / m.sum() < 0.05
    assert face_mask(_face(), H, W).unique().tolist() == [0.0, 1.0]
    row = soft[110]
    inside = int(torch.nonzero(m[110]).min())
    assert row[inside - 10] < row[inside] < row[inside + 10]


def test_grow_increases_area():
    base = face_mask(_face(), H, W).sum()
    assert face_mask(_face(), H, W, grow=6).sum() > base > face_mask(_face(), H, W, grow=-6).sum()


def test_batch_layout():
    out = batch_face_masks([[_face()], None, [], _face(with68=False)], H, W, feather=3.0)
    assert out.shape == (4, H, W) and out.dtype == torch.float32
    assert out[1].sum() == 0 and out[2].sum() == 0 and out[0].sum() > 0 and out[3].sum() > 0
    two = batch_face_masks([[_face(), _face(with68=False)]], H, W)
    assert torch.equal(two[0], torch.maximum(face_mask(_face(), H, W), face_mask(_face(False), H, W)))
