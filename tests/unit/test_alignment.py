"""FFHQ alignment on synthetic images and landmarks (no reference data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.models.errors import LikenessError
from likeness.models.images import to_rgb_uint8
from likeness.models.inversion.align import (
    E4E_OFFICIAL,
    PSTF,
    WPLUS_ADAPTER,
    AlignRecipe,
    align_face,
    e4e_input_tensor,
    ffhq_quad,
    ffhq_quad_from_5,
    gaussian_blur_hw,
)

_spec = importlib.util.spec_from_file_location(
    "ffhq_reference_impl", Path(__file__).resolve().parents[1] / "reference" / "ffhq_reference_impl.py"
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def synthetic_lm68(cx: float = 100.0, cy: float = 100.0, d: float = 40.0) -> np.ndarray:
    """A plausible frontal 68-point layout: eye distance ``d``, eyes at ``(cx +- d/2, cy)``."""
    lm = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    lm[0:17] = np.c_[cx + 1.05 * d * np.cos(t), cy + 0.2 * d + 1.3 * d * np.sin(t)]
    lm[17:22] = np.c_[np.linspace(cx - 0.85 * d, cx - 0.15 * d, 5), np.full(5, cy - 0.35 * d)]
    lm[22:27] = np.c_[np.linspace(cx + 0.15 * d, cx + 0.85 * d, 5), np.full(5, cy - 0.35 * d)]
    lm[27:31] = np.c_[np.full(4, cx), np.linspace(cy, cy + 0.5 * d, 4)]
    lm[31:36] = np.c_[np.linspace(cx - 0.2 * d, cx + 0.2 * d, 5), np.full(5, cy + 0.6 * d)]
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for start, ex in ((36, cx - d / 2), (42, cx + d / 2)):
        lm[start : start + 6] = np.c_[ex + 0.15 * d * np.cos(a), cy + 0.06 * d * np.sin(a)]
    m = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    lm[48:60] = np.c_[cx + 0.4 * d * np.cos(m), cy + 1.0 * d + 0.15 * d * np.sin(m)]
    n = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    lm[60:68] = np.c_[cx + 0.3 * d * np.cos(n), cy + 1.0 * d + 0.05 * d * np.sin(n)]
    return lm


def smooth_image(h: int = 200, w: int = 220, seed: int = 0) -> np.ndarray:
    """Smooth colourful uint8 pattern (bilinear-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    chans = [
        127.5 + 100 * np.sin(xx / (9 + 4 * rng.random()) + rng.random() * 6) * np.cos(yy / (11 + 5 * rng.random()))
        for _ in range(3)
    ]
    return np.clip(np.rint(np.stack(chans, axis=2)), 0, 255).astype(np.uint8)


def _similarity(points: np.ndarray, angle_deg: float, scale: float, shift: np.ndarray) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    return points @ rot.T + shift


def test_quad_is_similarity_equivariant():
    lm = synthetic_lm68()
    quad, qsize = ffhq_quad(lm)
    moved = _similarity(lm, 23.0, 1.7, np.array([5.0, -3.0]))
    quad2, qsize2 = ffhq_quad(moved)
    np.testing.assert_allclose(quad2, _similarity(quad, 23.0, 1.7, np.array([5.0, -3.0])), atol=1e-9)
    assert qsize2 == pytest.approx(1.7 * qsize)
    # A frontal, upright face gives an axis-aligned square centred below the eyes.
    assert quad[0, 0] == pytest.approx(quad[1, 0]) and quad[0, 1] == pytest.approx(quad[3, 1])


def test_five_points_equal_68_when_they_are_its_eye_means_and_mouth_corners():
    lm = synthetic_lm68()
    kps5 = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    q68, s68 = ffhq_quad(lm)
    q5, s5 = ffhq_quad_from_5(kps5)
    np.testing.assert_allclose(q5, q68, atol=1e-9)
    assert s5 == pytest.approx(s68)


def test_bad_landmarks_and_recipes_are_refused():
    img = smooth_image()
    with pytest.raises(LikenessError, match=r"\[68, 2\].*\[5, 2\]"):
        align_face(img, np.zeros((7, 2)))
    with pytest.raises(LikenessError, match="Degenerate"):
        align_face(img, np.zeros((68, 2)))
    with pytest.raises(ValueError, match="transform_size"):
        align_face(img, synthetic_lm68(), AlignRecipe("bad", 256, 128, True))


def test_rotated_photo_gives_the_same_aligned_face():
    img = smooth_image(240, 240)
    lm = synthetic_lm68(120, 110, 40)
    base = align_face(img, lm, E4E_OFFICIAL).image.astype(float)
    angle = 30.0
    rotated = np.asarray(Image.fromarray(img).rotate(angle, resample=Image.Resampling.BICUBIC, center=(120, 120)))
    # PIL rotates counter-clockwise on screen: (x, y) -> centre + R(-angle) (p - centre) in pixel coords.
    lm_rot = _similarity(lm - 120.0, -angle, 1.0, np.array([120.0, 120.0]))
    out = align_face(rotated, lm_rot, E4E_OFFICIAL).image.astype(float)
    centre = slice(64, 192)  # away from the corners the rotation filled with black
    assert np.abs(out[centre, centre] - base[centre, centre]).mean() < 3.0


def test_transform_round_trip_and_marker_position():
    img = np.zeros((200, 220, 3), np.uint8)
    lm = synthetic_lm68(110, 95, 36) + [0.3, -0.2]
    lm = _similarity(lm - [110, 95], 12.0, 1.0, np.array([110.0, 95.0]))
    p = np.array([118.0, 120.0])
    img[118:123, 116:121] = 255  # 5x5 marker centred on p
    face = align_face(img, lm, PSTF)
    q = face.source_to_aligned @ np.array([*p, 1.0])
    np.testing.assert_allclose((face.aligned_to_source @ q)[:2], p, atol=1e-9)
    ys, xs = np.nonzero(face.image[:, :, 0] > 0)
    w = face.image[ys, xs, 0].astype(float)
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    assert np.abs(centroid - q[:2]).max() < 1.0
    np.testing.assert_allclose(face.landmarks, lm @ face.source_to_aligned[:2, :2].T + face.source_to_aligned[:2, 2])


def test_padding_path_matches_reference_impl(caplog):
    caplog.set_level("DEBUG", logger="likeness.models.inversion.align")
    img = smooth_image(160, 170, seed=3)
    lm = synthetic_lm68(40, 45, 30)  # face in the top-left corner: quad leaves the image
    quad, qsize = ffhq_quad(lm)
    for recipe in (E4E_OFFICIAL, AlignRecipe("small_pad", 64, 64, True)):
        face = align_face(img, lm, recipe)
        expected = np.asarray(
            ref.align_reference(Image.fromarray(img), quad, qsize, recipe.output_size, recipe.transform_size, True)
        ).astype(int)
        np.testing.assert_array_equal(face.image, expected)
    assert caplog.text.count("align_face: padding") == 2


def test_shrink_path_matches_reference_impl():
    img = smooth_image(400, 420, seed=4)
    lm = synthetic_lm68(210, 190, 110)  # qsize ~ 440 -> shrink 2 for output 64... use a small output
    quad, qsize = ffhq_quad(lm)
    recipe = AlignRecipe("shrink", 64, 128, False)
    face = align_face(img, lm, recipe)
    assert face.shrink == int(np.floor(qsize / 64 * 0.5)) > 1
    expected = np.asarray(ref.align_reference(Image.fromarray(img), quad, qsize, 64, 128, False))
    np.testing.assert_array_equal(face.image, expected)


@pytest.mark.parametrize("mode", ["LA", "P", "I;16"])
def test_any_pil_mode_aligns_like_its_rgb_conversion(mode):
    grey = smooth_image(60, 70)[:, :, 0]
    pil = Image.fromarray(grey.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(grey).convert(mode)
    lm = synthetic_lm68(35, 25, 14)
    face = align_face(pil, lm, E4E_OFFICIAL)
    np.testing.assert_array_equal(face.image, align_face(to_rgb_uint8(pil), lm, E4E_OFFICIAL).image)
    assert face.image.shape == (256, 256, 3)


def test_array_inputs():
    img = smooth_image(30, 40)
    np.testing.assert_array_equal(to_rgb_uint8(img.astype(np.uint16) * 257), img)
    np.testing.assert_array_equal(to_rgb_uint8(torch.from_numpy(img / 255.0)[None]), img)
    np.testing.assert_array_equal(to_rgb_uint8(np.dstack([img, np.zeros((30, 40), np.uint8)])), img)
    with pytest.raises(LikenessError, match=r"\[0, 1\]"):
        to_rgb_uint8(img.astype(np.float32))
    with pytest.raises(LikenessError, match="shape"):
        to_rgb_uint8(np.zeros((3, 4, 5, 6)))


def test_gaussian_blur_matches_the_reference_sum_and_scipy():
    img = smooth_image(40, 50, seed=1).astype(np.float32)
    img[10:20, 5:15] = 255.0
    expected = ref.gaussian_filter_np(img, 2.3)
    out = gaussian_blur_hw(img, 2.3)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    ndimage = pytest.importorskip("scipy.ndimage")
    np.testing.assert_allclose(expected, ndimage.gaussian_filter(img, [2.3, 2.3, 0]), atol=1e-3)


def test_e4e_input_tensors():
    img = smooth_image(256, 256)
    x = e4e_input_tensor(img, E4E_OFFICIAL)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)
    big = smooth_image(512, 512, seed=2)
    y = e4e_input_tensor(big, WPLUS_ADAPTER)
    small = np.asarray(Image.fromarray(big).resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
    torch.testing.assert_close(y[0], (torch.from_numpy(small.copy()).permute(2, 0, 1) - 127.5) / 127.5)
    z = e4e_input_tensor(big, "pstf")
    assert z.shape == (1, 3, 256, 256) and z.min() >= -1.0 and z.max() <= 1.0
    with pytest.raises(LikenessError, match="Unknown alignment recipe"):
        e4e_input_tensor(img, "nope")
