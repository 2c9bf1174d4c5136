"""FaceA task builder: face crops, task masks, prompts, ComfyUI's inpainting latent conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from likeness.models.errors import LikenessError
from likeness.models.face import Face
from likeness.models.facea import (
    LOCAL_TASKS,
    TASKS,
    build_reference_crop,
    dilate_latent_mask,
    face_crop_region,
    feat_token_count,
    latent_mask,
    masked_image,
    task_prompt,
    training_latent_mask,
)
from likeness.models.finetune import image_sha256


def _ring(cx, cy, rx, ry, n, start=0.0, stop=2 * math.pi):
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(start, stop, n, endpoint=False)]


def _face(cx=300.0, cy=260.0, s=100.0, landmarks=True) -> Face:
    """A frontal face of box size ~s centred at (cx, cy), with a synthetic iBUG-68 layout."""
    eye_l, eye_r = (cx - 0.35 * s, cy - 0.15 * s), (cx + 0.35 * s, cy - 0.15 * s)
    nose, mouth_l, mouth_r = (cx, cy + 0.12 * s), (cx - 0.25 * s, cy + 0.35 * s), (cx + 0.25 * s, cy + 0.35 * s)
    lm = None
    if landmarks:
        top = cy - 0.2 * s  # the jaw line starts at ear level, above the eyes, and ends at the chin (cy + 0.6 s)
        jaw = [(cx + 0.5 * s * math.cos(t), top + 0.8 * s * math.sin(t)) for t in np.linspace(math.pi, 0, 17)]
        jaw = [(x, top + abs(y - top)) for x, y in jaw]  # lower half-ellipse from left to right
        brows = [(cx - 0.45 * s + 0.09 * s * i, cy - 0.3 * s) for i in range(5)]
        brows += [(cx + 0.09 * s + 0.09 * s * i, cy - 0.3 * s) for i in range(5)]
        nose_pts = [(cx, cy - 0.15 * s + 0.06 * s * i) for i in range(4)] + [
            (cx - 0.1 * s + 0.05 * s * i, cy + 0.15 * s) for i in range(5)
        ]
        eyes = _ring(*eye_l, 0.12 * s, 0.05 * s, 6) + _ring(*eye_r, 0.12 * s, 0.05 * s, 6)
        mouth = _ring(cx, cy + 0.35 * s, 0.25 * s, 0.08 * s, 12) + _ring(cx, cy + 0.35 * s, 0.15 * s, 0.03 * s, 8)
        lm = np.array(jaw + brows + nose_pts + eyes + mouth, dtype=np.float32)
        assert lm.shape == (68, 2)
    box = (cx - 0.5 * s, cy - 0.5 * s, cx + 0.5 * s, cy + 0.6 * s)
    return Face(bbox=box, score=0.99, kps=[eye_l, eye_r, nose, mouth_l, mouth_r], landmarks68=lm)


def test_prompts_and_vector_counts():
    assert task_prompt("woman", "face") == "a woman face"
    assert task_prompt("man", "eye_left") == "a man left eye"
    assert [task_prompt("person", t) for t in LOCAL_TASKS] == [
        "a person left eye",
        "a person right eye",
        "a person nose",
        "a person mouth",
    ]
    assert (feat_token_count("man"), feat_token_count("woman"), feat_token_count("person")) == (3, 4, 4)
    assert feat_token_count("man", 6) == 6
    with pytest.raises(LikenessError, match="class word"):
        task_prompt("cat", "face")
    with pytest.raises(LikenessError, match="unknown FaceA task"):
        task_prompt("man", "ear")
    with pytest.raises(LikenessError, match="0 \\(automatic\\) to 16"):
        feat_token_count("man", 17)


@pytest.mark.parametrize("landmarks", [True, False])
def test_reference_crop_geometry_and_masks(landmarks):
    image = torch.rand(480, 640, 3)
    face = _face(landmarks=landmarks)
    crop = build_reference_crop(image, face, index=2, resolution=128, crop_factor=2.0, mask_grow=8)
    assert crop.image.shape == (128, 128, 3) and crop.image.dtype == torch.float32
    assert set(crop.masks) == set(TASKS) and crop.photo_index == 2
    assert crop.photo_sha256 == image_sha256(image)
    r = crop.region
    assert r.width == r.height == round(2.0 * 110) and 0 <= r.x0 and r.x1 <= 640 and 0 <= r.y0 and r.y1 <= 480
    for task, m in crop.masks.items():
        assert m.shape == (128, 128) and set(torch.unique(m).tolist()) <= {0.0, 1.0} and m.sum() > 10, task
    masks = crop.masks
    cols = torch.arange(128).float()

    def centre_x(m):
        return float((m.sum(0) * cols).sum() / m.sum())

    assert centre_x(masks["eye_left"]) < 64 < centre_x(masks["eye_right"])  # viewer's left / right
    rows = torch.arange(128).float()
    cy = {t: float((masks[t].sum(1) * rows).sum() / masks[t].sum()) for t in LOCAL_TASKS}
    assert cy["eye_left"] < cy["nose"] < cy["mouth"]
    for part in LOCAL_TASKS:  # parts lie mostly inside the grown face mask (5-point ellipses stick out a little)
        inside = (masks[part] * masks["face"]).sum() / masks[part].sum()
        assert inside > 0.8, (part, float(inside))
    # the crop holds exactly the photo's pixels around the face (shrunk with area averaging)
    src = image[r.y0 : r.y1, r.x0 : r.x1].permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(src, size=(128, 128), mode="area")[0].permute(1, 2, 0)
    assert torch.allclose(crop.image, ref, atol=1e-5)


def test_crop_shrinks_to_small_photos_and_stays_square():
    face = _face(cx=60, cy=70, s=80)
    region = face_crop_region(face, (150, 120), crop_factor=3.0)
    assert region.width == region.height == 120 and region.x0 == 0 and region.y1 <= 150
    crop = build_reference_crop(torch.rand(150, 120, 4), face, resolution=128)
    assert crop.image.shape == (128, 128, 3)


def test_bad_inputs_are_reported_with_the_photo_index():
    with pytest.raises(LikenessError, match="multiple of 8"):
        build_reference_crop(torch.rand(100, 100, 3), _face(50, 50, 40), resolution=100)
    with pytest.raises(LikenessError, match="photo 4 must be"):
        build_reference_crop(torch.rand(3, 100, 100), _face(50, 50, 40), index=4)
    tiny = _face(cx=300, cy=300, s=6, landmarks=False)
    with pytest.raises(LikenessError, match="reference photo 1: the .* mask is empty"):
        build_reference_crop(torch.rand(600, 600, 3), tiny, index=1, resolution=64, crop_factor=40.0, mask_grow=0)


def test_inpainting_conventions_match_comfyui():
    image = torch.rand(2, 16, 16, 3)
    mask = torch.zeros(2, 16, 16)
    mask[:, 4:12, 4:12] = 1.0
    mask[1, 0, 0] = 0.4  # rounds to 0: kept
    out = masked_image(image, mask)
    assert torch.all(out[:, 4:12, 4:12] == 0.5)
    assert torch.equal(out[0, :4], image[0, :4]) and out[1, 0, 0].tolist() == pytest.approx(image[1, 0, 0].tolist())
    lm = latent_mask(mask, (2, 2))
    assert lm.shape == (2, 1, 2, 2) and set(torch.unique(lm).tolist()) <= {0.0, 1.0}
    expected = torch.nn.functional.interpolate(mask[:, None], size=(2, 2), mode="bilinear").round()
    assert torch.equal(lm, expected)
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 2, 2] = 1
    assert dilate_latent_mask(m, 1).sum() == 9 and torch.equal(dilate_latent_mask(m, 0), m)


def test_thin_parts_keep_a_latent_mask_where_rounding_would_drop_them():
    mask = torch.zeros(2, 64, 64)  # pixels -> an 8x8 latent, as the VAE's factor 8
    mask[0, 16:48, 16:48] = 1.0  # large: ComfyUI's rounding keeps it
    mask[1, 21, 42:44] = 1.0  # a 1x2 px sliver: rounds to nothing
    m, thin = training_latent_mask(mask, (8, 8))
    assert thin == [1]
    assert torch.equal(m[0], latent_mask(mask[:1], (8, 8))[0]) and m[0].sum() == 16
    assert m[1, 0].nonzero().tolist() == [[2, 5]]  # the latent pixel the sliver lies in
