"""Face Refine on a real photo with smoke models: only the masked face region changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def photo(reference_dir):
    rgb = np.asarray(Image.open(reference_dir / "faces" / "astronaut.png").convert("RGB"))
    return torch.from_numpy(rgb).float()[None] / 255.0


def _conditioning(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def test_refine_redraws_inside_the_face_mask_only(sd15_checkpoint, photo):
    from likeness.nodes.refine_node import LikenessFaceRefine

    model, clip, vae = sd15_checkpoint
    out = LikenessFaceRefine.execute(
        photo,
        model,
        vae,
        _conditioning(clip, "a close-up photo of a face"),
        _conditioning(clip, "lowres"),
        seed=1,
        steps=1,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.6,
        mask_region="face",
        grow=4,
        crop_factor=1.5,
        guide_size=64,
        max_size=256,
        feather=6,
        noise_mask_feather=8,
        color_match="none",
    )
    refined, mask, before, after, segs, info = out.args
    assert refined.shape == photo.shape and mask.shape == photo.shape[:3]
    outside = mask[0] == 0
    assert outside.float().mean() > 0.9  # the face is a small part of the photo
    assert torch.equal(refined[0][outside], photo[0][outside])  # bit-identical outside the mask
    inside = mask[0] > 0.5
    assert (refined[0][inside] - photo[0][inside]).abs().mean() > 0.01  # the face was redrawn
    assert len(before) == len(after) == 1 and before[0].shape == after[0].shape
    (height, width), seg_list = segs
    assert (height, width) == (512, 512) and len(seg_list) == 1 and seg_list[0].label == "face"
    assert "redrawn" in info


def test_no_face_pass_through_returns_the_image_untouched(sd15_checkpoint):
    from likeness.nodes.refine_node import LikenessFaceRefine

    model, clip, vae = sd15_checkpoint
    blank = torch.full((1, 128, 128, 3), 0.5)
    out = LikenessFaceRefine.execute(
        blank,
        model,
        vae,
        _conditioning(clip, "face"),
        _conditioning(clip, ""),
        seed=0,
        steps=1,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.5,
        mask_region="face",
        grow=0,
        crop_factor=3.0,
        guide_size=64,
        max_size=128,
        feather=0,
        noise_mask_feather=0,
        color_match="none",
        on_no_face="pass-through",
    )
    assert torch.equal(out.args[0], blank)
    assert "passed through" in out.args[5]


def test_no_face_error_names_the_image(sd15_checkpoint):
    from likeness.models.errors import NoFaceError
    from likeness.nodes.refine_node import LikenessFaceRefine

    model, clip, vae = sd15_checkpoint
    with pytest.raises(NoFaceError, match="batch image 0 \\(128x128 px\\)"):
        LikenessFaceRefine.execute(
            torch.zeros(1, 128, 128, 3),
            model,
            vae,
            _conditioning(clip, "face"),
            _conditioning(clip, ""),
            seed=0,
            steps=1,
            cfg=1.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=0.5,
            mask_region="face",
            grow=0,
            crop_factor=3.0,
            guide_size=64,
            max_size=128,
            feather=0,
            noise_mask_feather=0,
            color_match="none",
        )


def test_append_prompt_concatenates_like_conditioning_concat(sd15_checkpoint):
    from likeness.nodes.refine_node import _append_prompt

    _, clip, _ = sd15_checkpoint
    positive = _conditioning(clip, "a close-up photo of a face")
    out = _append_prompt(clip, "smiling, old", positive)
    extra = _conditioning(clip, "smiling, old")
    assert len(out) == len(positive) == 1
    assert out[0][0].shape == (1, 154, 768)  # two 77-token blocks, as ConditioningConcat makes them
    assert torch.equal(out[0][0][:, :77], positive[0][0]) and torch.equal(out[0][0][:, 77:], extra[0][0])
    assert out[0][1].keys() == positive[0][1].keys() and out[0][1] is not positive[0][1]  # options copied


SMALL = dict(
    seed=1, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", denoise=0.6, mask_region="face", grow=4,
    crop_factor=1.5, guide_size=64, max_size=256, feather=6, noise_mask_feather=8, color_match="none",
)  # fmt: skip


def test_rgba_is_refined_as_rgb_and_keeps_its_alpha(sd15_checkpoint, photo):
    """RGBA is read before any sampling (it used to fail after it: 'refined_crop has 3 channels')."""
    from likeness.nodes.refine_node import LikenessFaceRefine

    model, clip, vae = sd15_checkpoint
    alpha = torch.linspace(0, 1, photo.shape[2]).expand(1, photo.shape[1], -1)[..., None]
    rgba = torch.cat([photo, alpha], dim=-1)
    refined, mask, *_, info = LikenessFaceRefine.execute(
        rgba, model, vae, _conditioning(clip, "a face"), _conditioning(clip, ""), **SMALL
    ).args
    assert refined.shape == rgba.shape and torch.equal(refined[..., 3], rgba[..., 3])
    outside = mask[0] == 0
    assert torch.equal(refined[0][outside], rgba[0][outside]) and "alpha channel kept unchanged" in info
    grey = photo.mean(dim=-1, keepdim=True)
    out = LikenessFaceRefine.execute(grey, model, vae, _conditioning(clip, "a face"), _conditioning(clip, ""), **SMALL)
    assert out.args[0].shape == (*grey.shape[:3], 3)


def test_odd_images_and_skip_with_nothing_left_fail_before_sampling(sd15_checkpoint, monkeypatch):
    from likeness.models.errors import InputError, NoFaceError
    from likeness.nodes import refine_node
    from likeness.nodes.refine_node import LikenessFaceRefine

    def never(*args, **kwargs):
        raise AssertionError("sampled")

    monkeypatch.setattr(refine_node._Sampling, "redraw", never)
    model, clip, vae = sd15_checkpoint
    conds = (_conditioning(clip, "a face"), _conditioning(clip, ""))
    with pytest.raises(NoFaceError, match=r"^Face Refine: no usable face in any .* 'pass-through'"):
        LikenessFaceRefine.execute(torch.zeros(2, 64, 64, 3), model, vae, *conds, **SMALL, on_no_face="skip")
    with pytest.raises(InputError, match=r"^Face Refine input 'image': images with 5 channels are not supported"):
        LikenessFaceRefine.execute(torch.zeros(1, 64, 64, 5), model, vae, *conds, **SMALL)
    with pytest.raises(InputError, match=r"^Face Refine input 'image': the IMAGE batch is empty"):
        LikenessFaceRefine.execute(torch.zeros(0, 64, 64, 3), model, vae, *conds, **SMALL)
