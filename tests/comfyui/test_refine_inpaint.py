"""Face Refine with an SD1.5 *inpainting* checkpoint (UNet in_channels 9) in real ComfyUI.

The smoke models have no inpainting checkpoint, so a reduced 9-channel one is
written here (~0.6 GB, ~10 s). The node must take ComfyUI's inpaint path
(``InpaintModelConditioning``: masked-image latent + mask concatenated to the
UNet input) instead of a plain latent noise mask, and still change only the face.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def photo(reference_dir):
    rgb = np.array(Image.open(reference_dir / "faces" / "astronaut.png").convert("RGB"))
    return torch.from_numpy(rgb).float()[None] / 255.0


@pytest.fixture(scope="module")
def inpaint_checkpoint(comfy_env, tmp_path_factory):
    """(model, clip, vae) of a reduced random-weight SD1.5 inpainting checkpoint."""
    import comfy.sd

    from likeness.tools.smoke.sd15_layout import write_sd15_smoke_checkpoint

    path = write_sd15_smoke_checkpoint(
        tmp_path_factory.mktemp("inpaint") / "sd15_inpaint.safetensors", variant="reduced", in_channels=9
    )
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    path.unlink()  # weights are in memory; do not keep 0.6 GB in the temp folder
    return model, clip, vae


def _conditioning(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def test_comfyui_detects_the_9_channel_checkpoint_as_sd15_inpainting(inpaint_checkpoint):
    from likeness.nodes.refine_node import _is_inpaint_model

    model, _, _ = inpaint_checkpoint
    config = model.model.model_config
    assert type(config).__name__ == "SD15"
    assert config.unet_config["in_channels"] == 9 and config.inpaint_model()
    assert model.model.concat_keys == ("mask", "masked_image")
    assert model.model.diffusion_model.input_blocks[0][0].weight.shape == (320, 9, 3, 3)
    assert _is_inpaint_model(model)


def test_refine_with_an_inpainting_model_uses_inpaint_conditioning(
    inpaint_checkpoint, sd15_checkpoint, photo, comfy_env, monkeypatch
):
    from likeness.nodes.refine_node import LikenessFaceRefine, _is_inpaint_model

    nodes = comfy_env.nodes
    assert not _is_inpaint_model(sd15_checkpoint[0])  # the plain smoke checkpoint keeps the noise-mask path
    encode_calls, sampler_calls = [], []
    real_encode, real_sampler = nodes.InpaintModelConditioning.encode, nodes.common_ksampler

    def spy_encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
        encode_calls.append({"pixels": pixels.shape, "mask": mask.shape, "noise_mask": noise_mask})
        return real_encode(self, positive, negative, pixels, vae, mask, noise_mask=noise_mask)

    def spy_sampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **kwargs):
        sampler_calls.append({"positive": positive, "negative": negative, "latent": latent})
        return real_sampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **kwargs)

    monkeypatch.setattr(nodes.InpaintModelConditioning, "encode", spy_encode)
    monkeypatch.setattr(nodes, "common_ksampler", spy_sampler)

    model, clip, vae = inpaint_checkpoint
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
    refined, mask, before, after, _, info = out.args

    # the inpaint path was taken: one encode per face, the sampler saw concat conditioning
    assert len(encode_calls) == 1 and len(sampler_calls) == 1
    work = before[0].shape  # [1, h, w, 3] crop at working size
    assert encode_calls[0] == {"pixels": work, "mask": (1, *work[1:3]), "noise_mask": True}
    call = sampler_calls[0]
    latent_shape = (1, 4, work[1] // 8, work[2] // 8)
    for cond in (call["positive"], call["negative"]):
        opts = cond[0][1]
        assert opts["concat_latent_image"].shape == latent_shape
        assert opts["concat_mask"].shape == (1, 1, *work[1:3])
        assert set(torch.unique(opts["concat_mask"].round()).tolist()) == {0.0, 1.0}
    assert call["latent"]["samples"].shape == latent_shape
    assert call["latent"]["noise_mask"].shape == (1, 1, *work[1:3])

    # only the face changed
    assert refined.shape == photo.shape and mask.shape == photo.shape[:3]
    outside = mask[0] == 0
    assert outside.float().mean() > 0.9
    assert torch.equal(refined[0][outside], photo[0][outside])  # bit-identical outside the mask
    inside = mask[0] > 0.5
    assert (refined[0][inside] - photo[0][inside]).abs().mean() > 0.01  # the face was redrawn
    assert after[0].shape == before[0].shape
    assert "redrawn" in info
