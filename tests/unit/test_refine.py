"""FaceDetailer-style refinement geometry (models/refine): crop, working size, paste, colour, SEGS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from likeness.models.errors import InputError
from likeness.models.mask_ops import feather_mask
from likeness.models.refine import (
    SEG,
    CropRegion,
    box_mask,
    crop_image,
    crop_mask,
    crop_region,
    from_seg,
    match_color,
    paste_back,
    plan_crop,
    to_segs,
    working_size,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CPU (50x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def image_and_box(draw, max_side: int = 96):
    """(H, W) and a face box that may touch or cross the border."""
    h = draw(st.integers(4, max_side))
    w = draw(st.integers(4, max_side))
    bw = draw(st.floats(1.0, float(w)))
    bh = draw(st.floats(1.0, float(h)))
    x1 = draw(st.floats(-bw / 2, w - bw / 2))
    y1 = draw(st.floats(-bh / 2, h - bh / 2))
    return (h, w), (x1, y1, x1 + bw, y1 + bh)


def _image(h: int, w: int, b: int = 2, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)


# ----------------------------------------------------------------------------- crop region


@FAST
@given(image_and_box(200), st.floats(0.5, 6.0), st.booleans())
def test_region_inside_image_and_centred_when_it_fits(hw, crop_factor, square):
    (h, w), box = hw
    r = crop_region(box, (h, w), crop_factor, square=square)
    assert 0 <= r.x0 < r.x1 <= w and 0 <= r.y0 < r.y1 <= h
    assert (r.work_w, r.work_h, r.scale) == (r.width, r.height, 1.0)
    bw, bh = box[2] - box[0], box[3] - box[1]
    want_w, want_h = (max(bw, bh),) * 2 if square else (bw, bh)
    # size = box * crop_factor, clipped only by the image
    assert r.width == min(max(round(want_w * crop_factor), 1), w)
    assert r.height == min(max(round(want_h * crop_factor), 1), h)
    # shifted, not clipped: the centre moves only when the region would leave the image
    cx = (box[0] + box[2]) / 2
    if r.x0 > 0 and r.x1 < w:
        assert abs((r.x0 + r.x1) / 2 - cx) <= 0.5 + 1e-9


def test_region_shifted_not_clipped_at_border():
    r = crop_region((0, 10, 20, 30), (100, 200), 3.0)  # centre x = 10, wants 60 wide
    assert r.as_list() == [0, 0, 60, 60]
    r = crop_region((190, 80, 200, 100), (100, 200), 3.0)
    assert r.as_list() == [170, 40, 200, 100]
    r = crop_region((0, 0, 100, 100), (50, 80), 3.0)  # larger than the image: clipped
    assert r.as_list() == [0, 0, 80, 50]


@pytest.mark.parametrize("bad", [(10, 10, 10, 20), (0, 0, float("nan"), 5), (1, 2, 3)])
def test_region_rejects_bad_boxes_quoting_them(bad):
    with pytest.raises(InputError, match="face box"):
        crop_region(bad, (64, 64))


def test_region_rejects_bad_crop_factor():
    with pytest.raises(InputError, match="crop_factor must be a positive number, got 0"):
        crop_region((1, 1, 5, 5), (64, 64), 0)


# ----------------------------------------------------------------------------- working size


@FAST
@given(
    image_and_box(3000),
    st.floats(1.0, 4.0),
    st.sampled_from([256, 512, 768]),
    st.sampled_from([512, 1024]),
    st.booleans(),
)
def test_working_size_multiple_of_8_capped_aspect_kept(hw, crop_factor, target, max_size, allow_down):
    (h, w), box = hw
    r = crop_region(box, (h, w), crop_factor)
    ww, wh, scale = working_size(r, target, max_size, 8, allow_downscale=allow_down)
    assert ww % 8 == 0 and wh % 8 == 0 and 8 <= ww <= max_size and 8 <= wh <= max_size
    # aspect kept within the rounding of each side (half a multiple, or the floor to max_size / min 8)
    assert abs(ww / r.width - wh / r.height) <= 8 / r.width + 8 / r.height + 1e-9
    if not allow_down and max(r.width, r.height) <= max_size:
        assert scale >= 1.0
    short, long = min(r.width, r.height), max(r.width, r.height)
    want = target / short if allow_down else max(target / short, 1.0)
    if long * want <= max_size:  # not capped: the short side reaches the target (or stays, without downscale)
        assert scale == pytest.approx(want)
        assert abs(min(ww, wh) - short * want) <= 4
    else:  # capped: the long side is the largest multiple of 8 near max_size
        assert scale == pytest.approx(max_size / long)
        assert max(ww, wh) >= max_size - 8


def test_working_size_facedetailer_defaults():
    r = plan_crop((100, 100, 164, 164), (512, 512))  # 64 px face -> 192 px crop -> x 8/3 = 512
    assert r.as_list() == [36, 36, 228, 228] and r.work_size == (512, 512)
    assert math.isclose(r.scale, 512 / 192)
    wide = plan_crop((100, 100, 300, 200), (1000, 2000))  # 600 x 300 crop: short side 512 -> 1024 x 512
    assert wide.work_size == (1024, 512)
    huge = plan_crop((0, 0, 1500, 900), (900, 1500), crop_factor=1.0)  # capped by max_size even at scale < 1
    assert huge.work_size == (1024, 616) and huge.scale < 1
    by_box = plan_crop((100, 100, 164, 164), (2048, 2048), guide_for="bbox")  # 512/64 = 8 -> capped 1024
    assert by_box.work_size == (1024, 1024)


# ----------------------------------------------------------------------------- crop / paste


@FAST
@given(image_and_box(64), st.floats(1.0, 4.0), st.integers(0, 6))
def test_paste_keeps_pixels_outside_unfeathered_mask_bit_identical(hw, crop_factor, feather):
    (h, w), box = hw
    image = _image(h, w)
    region = plan_crop(box, (h, w), crop_factor, guide_size=24, max_size=48)
    mask = box_mask(box, (h, w))
    refined = torch.rand(2, region.work_h, region.work_w, 3) * 3 - 1  # arbitrary, even out of range
    out = paste_back(image, refined, region, mask, feather=feather)
    assert out.shape == image.shape and out.dtype == image.dtype
    outside = (mask == 0)[None, :, :, None].expand_as(image)
    assert torch.equal(out[outside], image[outside])
    inside_region = torch.zeros(h, w, dtype=torch.bool)
    inside_region[region.y0 : region.y1, region.x0 : region.x1] = True
    assert torch.equal(out[:, ~inside_region], image[:, ~inside_region])


@FAST
@given(image_and_box(64), st.integers(1, 12))
def test_paste_blends_with_the_image_space_feathered_mask(hw, feather):
    (h, w), box = hw
    image = _image(h, w, b=1, seed=5)
    region = crop_region(box, (h, w), 2.0)
    mask = box_mask(box, (h, w), dilation=3)
    refined = torch.rand(1, region.height, region.width, 3)
    out = paste_back(image, refined, region, mask, feather=feather)
    m = feather_mask(mask, feather, inside=True)[region.y0 : region.y1, region.x0 : region.x1, None]
    crop = image[0, region.y0 : region.y1, region.x0 : region.x1]
    torch.testing.assert_close(
        out[0, region.y0 : region.y1, region.x0 : region.x1], crop * (1 - m) + refined[0] * m, atol=1e-6, rtol=0
    )


def test_paste_writes_refined_where_mask_is_one_and_blends_linearly():
    image = torch.zeros(1, 20, 30, 3)
    region = CropRegion(5, 4, 25, 16, work_w=20, work_h=12)
    refined = torch.full((1, 12, 20, 3), 0.8)
    mask = torch.zeros(20, 30)
    mask[6:10, 8:12] = 1.0
    mask[12, 20] = 0.25
    out = paste_back(image, refined, region, mask)
    assert torch.equal(out[0, 6:10, 8:12], torch.full((4, 4, 3), 0.8))
    assert torch.allclose(out[0, 12, 20], torch.full((3,), 0.2))
    assert out[0].sum().item() == pytest.approx(16 * 3 * 0.8 + 3 * 0.2, rel=1e-6)


@FAST
@given(image_and_box(64), st.floats(1.0, 4.0))
def test_crop_then_paste_unchanged_crop_is_exact_without_resize(hw, crop_factor):
    (h, w), box = hw
    image = _image(h, w, seed=3)
    region = crop_region(box, (h, w), crop_factor)
    crop = crop_image(image, region)
    assert crop.shape == (2, region.height, region.width, 3)
    mask = feather_mask(box_mask(box, (h, w), dilation=2), 4)
    assert torch.equal(paste_back(image, crop, region, mask, feather=6), image)
    assert torch.equal(paste_back(image, crop, region, None), image)


def test_crop_then_paste_with_resize_is_close_inside_region():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 80), torch.linspace(0, 1, 120), indexing="ij")
    image = torch.stack([0.2 + 0.6 * xx, 0.5 + 0.3 * torch.sin(3 * yy), 0.8 - 0.5 * xx * yy], -1)[None]
    region = plan_crop((40, 20, 70, 50), (80, 120), 2.0, guide_size=160, max_size=256)
    assert (region.width, region.height) != region.work_size == (160, 160)
    crop = crop_image(image, region)
    assert crop.shape == (1, 160, 160, 3) and 0 <= crop.min() and crop.max() <= 1
    out = paste_back(image, crop, region)
    err = (out - image).abs()
    assert err.max().item() < 4e-3  # bicubic up then area down of a smooth image
    small = plan_crop((40, 20, 70, 50), (80, 120), 2.0, guide_size=32, allow_downscale=True)
    assert small.work_size == (32, 32)
    down = paste_back(image, crop_image(image, small), small)
    assert (down - image).abs().max().item() < 3e-2


def test_paste_batches_and_broadcasts_and_keeps_dtype():
    image = _image(16, 16, b=3).half()
    region = CropRegion(2, 2, 10, 12, work_w=16, work_h=24)
    refined = torch.ones(1, 24, 16, 3)
    mask = torch.zeros(3, 16, 16)
    mask[1, 4:8, 4:8] = 1
    out = paste_back(image, refined, region, mask)
    assert out.dtype == torch.float16
    assert torch.equal(out[0], image[0]) and torch.equal(out[2], image[2])
    assert torch.equal(out[1, 4:8, 4:8], torch.ones(4, 4, 3, dtype=torch.float16))
    with pytest.raises(
        ValueError, match="mask is \\(8, 8\\) but the image is \\(H=16, W=16\\); pass it in image space"
    ):
        paste_back(image, refined, region, torch.ones(8, 8))
    with pytest.raises(ValueError, match="refined_crop has batch 2 but the image has batch 3"):
        paste_back(image, torch.ones(2, 24, 16, 3), region, mask)


def test_crop_mask_keeps_rank_and_range():
    mask = box_mask((10, 10, 20, 20), (40, 40))
    region = plan_crop((10, 10, 20, 20), (40, 40), 2.0, guide_size=64)
    m2 = crop_mask(mask, region)
    m3 = crop_mask(mask[None].repeat(2, 1, 1), region)
    assert m2.shape == (64, 64) and m3.shape == (2, 64, 64)
    assert torch.equal(m3[0], m2) and 0 <= m2.min() and m2.max() <= 1
    assert m2[32, 32] == 1 and m2[0, 0] == 0
    assert torch.equal(crop_mask(mask, crop_region((10, 10, 20, 20), (40, 40), 2.0)), mask[5:25, 5:25])


# ----------------------------------------------------------------------------- colour


def _lab_stats(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from kornia.color import rgb_to_lab

    lab = rgb_to_lab(x.movedim(-1, 1))
    w = weight[:, None]
    mean = (lab * w).sum((2, 3)) / w.sum((2, 3))
    std = (((lab - mean[..., None, None]) ** 2 * w).sum((2, 3)) / w.sum((2, 3))).sqrt()
    return mean, std


def test_match_color_moves_surround_statistics_to_reference():
    g = torch.Generator().manual_seed(1)
    reference = 0.25 + 0.5 * torch.rand(2, 32, 32, 3, generator=g)
    drifted = (reference * 0.7 + torch.tensor([0.15, 0.05, 0.0])).clamp(0, 1)  # colour cast + lower contrast
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    out = match_color(drifted, reference, mask)
    assert out.shape == drifted.shape and 0 <= out.min() and out.max() <= 1
    weight = (1 - mask).expand(2, 32, 32)
    mu_ref, sd_ref = _lab_stats(reference, weight)
    mu_in, sd_in = _lab_stats(drifted, weight)
    mu_out, sd_out = _lab_stats(out, weight)
    assert ((mu_out - mu_ref).abs() < 0.25 * (mu_in - mu_ref).abs() + 0.5).all()
    assert ((sd_out - sd_ref).abs() < 0.25 * (sd_in - sd_ref).abs() + 0.5).all()
    assert (mu_out - mu_ref).abs().max() < 1.0  # Lab units (L in 0..100)
    half = match_color(drifted, reference, mask, strength=0.5)
    mu_half, _ = _lab_stats(half, weight)
    assert ((mu_half - mu_ref).abs() < (mu_in - mu_ref).abs()).all()
    assert match_color(drifted, reference, mask, method="none") is drifted


def test_match_color_keeps_alpha_and_checks_shapes(caplog):
    ref = torch.rand(1, 8, 8, 4)
    src = torch.rand(1, 8, 8, 4)
    out = match_color(src, ref, torch.ones(8, 8))  # no surround: whole crop, warned
    assert torch.equal(out[..., 3], src[..., 3])
    assert "using the whole crop" in caplog.text
    with pytest.raises(ValueError, match="must share size"):
        match_color(src, torch.rand(1, 9, 8, 4))


# ----------------------------------------------------------------------------- SEGS


def test_to_segs_structure_and_round_trip():
    hw = (48, 64)
    box = (20.0, 10.0, 36.0, 30.0)
    region = plan_crop(box, hw, 2.0, guide_size=64)
    mask = box_mask(box, hw)
    crop = crop_image(torch.rand(1, 48, 64, 3), region, (region.width, region.height))
    header, segs = to_segs(hw, [region], [mask], [box], ["face"], [0.93], [crop])
    assert header == (48, 64) and len(segs) == 1
    seg = segs[0]
    assert isinstance(seg, SEG) and SEG._fields == (
        "cropped_image",
        "cropped_mask",
        "confidence",
        "crop_region",
        "bbox",
        "label",
        "control_net_wrapper",
    )
    assert seg.crop_region == region.as_list() == [12, 0, 44, 40]
    assert seg.bbox == [20.0, 10.0, 36.0, 30.0] and seg.label == "face" and seg.confidence == pytest.approx(0.93)
    assert seg.control_net_wrapper is None and seg.cropped_image is crop
    assert isinstance(seg.cropped_mask, np.ndarray) and seg.cropped_mask.dtype == np.float32
    assert seg.cropped_mask.shape == (40, 32) and seg.cropped_mask.sum() == 16 * 20
    region2, mask2 = from_seg(seg, hw)
    assert region2.as_list() == region.as_list() and torch.equal(mask2, mask)
    _, segs_region_masks = to_segs(hw, [region], [seg.cropped_mask], [box], ["face"], [0.5])
    assert segs_region_masks[0].cropped_image is None
    assert np.array_equal(segs_region_masks[0].cropped_mask, seg.cropped_mask)
    with pytest.raises(ValueError, match="got 1 regions but \\{'labels': 2\\}"):
        to_segs(hw, [region], [mask], [box], ["a", "b"], [0.5])
    with pytest.raises(ValueError, match="segment mask \\(5, 5\\) matches neither"):
        to_segs(hw, [region], [np.ones((5, 5))], [box], ["a"], [0.5])
