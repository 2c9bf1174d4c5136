"""SDXL single-file and IdentityNet smoke layouts (no ComfyUI, no big files)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from likeness.models.pstf.sites import SDXL_SITES
from likeness.tools.smoke import sdxl_layout
from likeness.tools.smoke.sd15_layout import UNET_PREFIX, VAE_PREFIX
from likeness.tools.smoke.sdxl_layout import (
    CLIP_G_PREFIX,
    CLIP_L_PREFIX,
    IDENTITYNET_CONFIG,
    identitynet_shapes,
    sdxl_attn2_sites,
    sdxl_checkpoint_shapes,
    sdxl_param_count,
    write_identitynet_smoke,
    write_sdxl_smoke_checkpoint,
)


def test_sdxl_checkpoint_has_the_sdxl_unet_and_both_text_encoders():
    shapes = sdxl_checkpoint_shapes()
    assert sdxl_param_count() == 2_567_463_684  # the SDXL base UNet
    assert sdxl_param_count(CLIP_G_PREFIX) == 694_659_841 and sdxl_param_count(CLIP_L_PREFIX) == 123_060_557
    assert sum(k.startswith(VAE_PREFIX) for k in shapes) == 248
    u = UNET_PREFIX
    assert shapes[u + "label_emb.0.0.weight"] == (1280, 2816)
    assert shapes[u + "input_blocks.4.1.proj_in.weight"] == (640, 640)  # Linear projections
    assert shapes[u + "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert shapes[u + "middle_block.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert u + "input_blocks.1.1.norm.weight" not in shapes  # level 0 has no attention
    assert shapes[u + "output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes[CLIP_G_PREFIX + "transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert shapes[CLIP_G_PREFIX + "logit_scale"] == ()
    assert shapes[CLIP_L_PREFIX + "embeddings.position_ids"] == (1, 77)


def test_unet_sites_are_the_70_of_the_instantid_table():
    sites = sdxl_attn2_sites()
    assert sites == {s.comfy_key: s.hidden_size for s in SDXL_SITES}
    assert list(sites)[:2] == [("input", 4, 0), ("input", 4, 1)] and ("middle", 0, 9) in sites


def test_identitynet_shapes_are_diffusers_controlnetmodel():
    diffusers = pytest.importorskip("diffusers")
    config = {k: v for k, v in IDENTITYNET_CONFIG.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = diffusers.ControlNetModel(**config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = identitynet_shapes()
    assert shapes == expected and sum(torch.Size(v).numel() for v in shapes.values()) == 1_251_014_160
    assert shapes["controlnet_cond_embedding.conv_in.weight"] == (16, 3, 3, 3)
    assert sum(k.startswith("controlnet_down_blocks.") for k in shapes) == 2 * 9


def test_writers_stream_the_layouts(tmp_path, monkeypatch):
    full = sdxl_checkpoint_shapes()
    keys = [
        UNET_PREFIX + "label_emb.0.0.weight",
        CLIP_L_PREFIX + "embeddings.position_ids",
        CLIP_G_PREFIX + "logit_scale",
    ]
    monkeypatch.setattr(sdxl_layout, "sdxl_checkpoint_shapes", lambda: {k: full[k] for k in keys})
    path = write_sdxl_smoke_checkpoint(tmp_path / "sdxl.safetensors", seed=3)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["likeness.smoke"]) == {"model": "sdxl", "seed": 3, "random_weights": True}
        assert f.get_tensor(keys[0]).dtype == torch.float8_e4m3fn and f.get_tensor(keys[0]).shape == (1280, 2816)
        assert torch.equal(f.get_tensor(keys[1]), torch.arange(77)[None])
    cnet = identitynet_shapes()
    small = {k: cnet[k] for k in ("conv_in.weight", "controlnet_mid_block.bias")}
    monkeypatch.setattr(sdxl_layout, "identitynet_shapes", lambda: dict(small))
    weights = write_identitynet_smoke(tmp_path / "ControlNetModel", seed=1)
    assert json.loads((tmp_path / "ControlNetModel" / "config.json").read_text())["transformer_layers_per_block"] == [
        1,
        2,
        10,
    ]
    with safe_open(str(weights), framework="pt") as f:
        assert set(f.keys()) == set(small) and f.get_tensor("conv_in.weight").abs().max() > 0
    with pytest.raises(ValueError, match="dtype must be"):
        write_sdxl_smoke_checkpoint(tmp_path / "x.safetensors", dtype=torch.int8)
