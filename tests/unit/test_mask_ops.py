"""The shared mask geometry (models/mask_ops.py): hull, polygon, ellipse, grow and feather in pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kornia.morphology import dilation

from likeness.models.mask_ops import (
    GROW_STEP,
    _disk,
    convex_hull,
    ellipse_mask,
    feather_mask,
    feather_reach,
    grow_mask,
    polygon_mask,
)

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_convex_hull_drops_inner_points_and_keeps_the_interior_on_the_left():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [2, 7]], dtype=float)
    hull = convex_hull(square)
    assert sorted(map(tuple, hull)) == [(0, 0), (0, 10), (10, 0), (10, 10)]
    for p, q in zip(hull, np.roll(hull, -1, axis=0), strict=True):  # the centre is left of every edge
        assert (q[0] - p[0]) * (5 - p[1]) - (q[1] - p[1]) * (5 - p[0]) > 0
    assert convex_hull(np.array([[1.0, 2.0], [1.0, 2.0]])).shape == (1, 2)


def test_polygon_mask_counts_pixel_centres():
    m = polygon_mask([[2, 3], [7, 3], [7, 6], [2, 6]], 10, 12)
    assert m.shape == (10, 12) and m.dtype == torch.float32
    assert m.sum().item() == 6 * 4 and m[3:7, 2:8].min() == 1  # rows 3..6, cols 2..7 (edges included)
    assert polygon_mask([[0, 0], [1, 1]], 5, 5).sum() == 0  # fewer than 3 hull points: empty


def test_ellipse_mask_area_and_rotation():
    m = ellipse_mask((50, 40), (20, 10), 0.0, 80, 100)
    assert abs(m.sum().item() - math.pi * 200) < 20
    rotated = ellipse_mask((50, 40), (20, 10), math.pi / 2, 80, 100)
    assert rotated[40, 50 - 15] == 0 and rotated[40 - 15, 50] == 1  # the long axis now runs vertically


def test_grow_shrink_is_a_disk_and_outside_counts_as_empty():
    m = torch.zeros(100, 100)
    m[40:60, 40:60] = 1
    grown = grow_mask(m, 5)
    assert abs(grown.sum().item() - (400 + 4 * 20 * 5 + math.pi * 25)) < 12
    assert bool((grown >= m).all()) and grown.unique().tolist() == [0.0, 1.0]
    assert grow_mask(m, -3).sum().item() == 14 * 14
    assert torch.equal(grow_mask(m, 0), m)
    assert grow_mask(torch.ones(10, 10), -2).sum().item() == 6 * 6
    batch = torch.stack([m, torch.zeros_like(m)])
    assert grow_mask(batch, 5).shape == (2, 100, 100) and grow_mask(batch, 5)[1].sum() == 0


@pytest.mark.parametrize("radius", [GROW_STEP + 1, 3 * GROW_STEP + 2])
def test_large_grow_runs_in_steps_and_stays_close_to_one_disk(radius):
    m = torch.zeros(1, 1, 160, 160)
    m[..., 70:90, 70:90] = 1
    one_disk = dilation(m, _disk(radius, m.device), border_type="constant", border_value=0.0)[0, 0]
    stepped = grow_mask(m[0, 0], radius)
    assert bool((stepped >= m[0, 0]).all())
    differ = (stepped != one_disk).sum().item()
    assert differ / one_disk.sum().item() < 0.01  # a few boundary pixels of the round corners


def test_feather_width_is_the_ramp_width():
    mask = torch.zeros(1, 60, 60)
    mask[:, 15:45, 15:45] = 1
    inner = feather_mask(mask, 10, inside=True)
    outer = feather_mask(mask, 10)
    assert inner[0, 30, 30] == pytest.approx(1.0, abs=1e-6)
    assert inner[0, 30, 14] == 0 and 0 < inner[0, 30, 16] < inner[0, 30, 20] < inner[0, 30, 24] < 1
    assert inner[0, 30, 26] == pytest.approx(1.0, abs=1e-6)  # ramp 10 px wide, inside the mask
    assert outer[0, 30, 9] == 0 and outer[0, 30, 14] > 0.3 and outer[0, 30, 20] == pytest.approx(1.0, abs=1e-6)
    assert outer[0, 30, 15] == pytest.approx(1 - outer[0, 30, 14].item(), abs=1e-6)  # centred on the edge
    assert feather_reach(10) == 10 and feather_reach(5) == 6 and feather_reach(0) == 0
    border = torch.zeros(1, 30, 30)
    border[:, :, :10] = 1  # touches the image border: it stays at full strength there
    assert feather_mask(border, 6, inside=True)[0, 15, 0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="feather width must be >= 0 pixels, got -1"):
        feather_mask(mask, -1)


def test_feather_zero_is_identity():
    mask = torch.rand(2, 9, 7)
    assert feather_mask(mask, 0) is mask


@FAST
@given(st.integers(8, 48), st.integers(8, 48), st.integers(1, 16), st.integers(0, 2**31 - 1), st.booleans())
def test_inside_feather_in_unit_range_and_zero_outside_support(h, w, width, seed, soft):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(h, w, generator=g) > 0.6).float()
    if soft:
        mask = mask * torch.rand(h, w, generator=g)
    out = feather_mask(mask, width, inside=True)
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.all(out[mask == 0] == 0)
