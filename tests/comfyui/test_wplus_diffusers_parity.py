"""Cross-implementation parity of the W+ adapter: ComfyUI patch vs diffusers processors.

The same random SD1.5 UNet weights (the smoke checkpoint, fp16 on disk, run in
fp32 on both sides) are run

* by ComfyUI's own UNet, patched by :func:`nodes.patching.apply_wplus_adapter`
  (attn2 replaces; W+ tokens injected by the patch, context = 77 text tokens), and
* by diffusers' ``UNet2DConditionModel`` (weights converted with diffusers' own
  ``convert_ldm_unet_checkpoint``) with :func:`models.wplus_adapter.diffusers_unet.apply_wplus_adapter_to_unet`
  (context = [77 text tokens | 4 W+ tokens] from :func:`models.wplus_adapter.diffusers_unet.encode_context`),

with the same adapter file and the same W+ code. Both are called on the raw
UNet input (no sigma scaling), so the noise predictions must agree to fp32
rounding: ``TOL`` below, relative to the output scale.
"""

from __future__ import annotations

import gc

import pytest
import torch

# fp32 rounding of two different implementations of the same maths (ComfyUI's CPU attention is
# sub-quadratic chunked attention, diffusers' is torch SDPA; different conv/GroupNorm/linear call
# orders) measured 2.2e-6 of the output scale (max |out| ~1.5), patched or not; the W+ effect at
# weight 1 is 0.63 of it. TOL sits 45x above the first and 6000x below the second.
TOL = 1e-4  # max |a - b| / max |unpatched ComfyUI output|

SIGMAS = torch.linspace(14.6, 0.03, 11)  # a 10-step schedule; step 5 is inside the W+ window
STEP = 5

SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "use_linear_projection": False,
}


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latent x [2,4,8,8], timesteps t [2] (float, 0..999), text context [2,77,768], W+ code [1,18,512]."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([500.0, 137.0])
    text = torch.randn(2, 77, 768, generator=g)
    wplus = torch.randn(1, 18, 512, generator=g)
    return x, t, text, wplus


def _comfy_forward(model, x, t, text, cond_or_uncond=(0,)) -> torch.Tensor:
    """ComfyUI's diffusion model called directly, with the transformer_options the sampler would pass."""
    options = dict(model.model_options.get("transformer_options", {}))
    sigma = SIGMAS[STEP].repeat(x.shape[0])
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigma, sample_sigmas=SIGMAS)
    unet = model.model.diffusion_model
    dtype = next(unet.parameters()).dtype
    assert dtype == torch.float32, f"ComfyUI UNet runs in {dtype}; this parity test needs fp32"
    with torch.inference_mode():
        return unet(x, timesteps=t, context=text, transformer_options=options).float()


def _diffusers_unet(checkpoint_path):
    """diffusers SD1.5 UNet with the smoke checkpoint's weights, converted by diffusers, upcast to fp32."""
    with pytest.MonkeyPatch.context() as mp:  # offline: the config is written out above, nothing is fetched
        mp.setenv("HF_HUB_OFFLINE", "1")
        from diffusers import UNet2DConditionModel
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors import safe_open

    ldm = {}
    with safe_open(str(checkpoint_path), framework="pt") as f:
        for key in f.keys():
            if key.startswith("model.diffusion_model."):
                ldm[key] = f.get_tensor(key).to(torch.float32)
    converted = convert_ldm_unet_checkpoint(ldm, dict(SD15_UNET_CONFIG))
    del ldm
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    missing = sorted(set(unet.state_dict()) ^ set(converted))
    assert not missing, f"converted keys differ from the diffusers UNet's: {missing[:5]}"
    unet.load_state_dict(converted, strict=True, assign=True)
    return unet.eval()


@pytest.fixture(scope="module")
def outputs(comfy_env, sd15_checkpoint, count_site_calls):
    """Every noise prediction the tests compare, computed once; the diffusers UNet is freed afterwards."""
    from likeness.models.wplus_adapter.diffusers_unet import (
        apply_wplus_adapter_to_unet,
        encode_context,
        set_wplus_scale,
    )
    from likeness.models.wplus_adapter.model import load_wplus_adapter
    from likeness.nodes.patching import LoadedWPlusAdapter, apply_wplus_adapter
    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    model = sd15_checkpoint[0]
    path = comfy_env.models / "wplus" / "wplus_adapter.bin"
    adapter = load_wplus_adapter(path)
    loaded = LoadedWPlusAdapter.wrap(adapter, path.name)
    x, t, text, wplus = _inputs()
    out = {}

    out["comfy_base"] = _comfy_forward(model, x, t, text)
    for weight in (0.0, 1.0):
        patched, patch = apply_wplus_adapter(model, loaded, wplus, weight, 0.0, 1.0)
        with count_site_calls() as hits:
            out[f"comfy_{weight:g}"] = _comfy_forward(patched, x, t, text)
        if weight:
            assert len(hits) == 16, f"W+ replaces hit at {len(hits)} of 16 sites"
            # CFG batch as ComfyUI builds it: uncond chunk first (row 0), then cond (row 1)
            out["comfy_cfg"] = _comfy_forward(patched, x, t, text, cond_or_uncond=(1, 0))
        del patched, patch

    unet = _diffusers_unet(comfy_env.models / "checkpoints" / SMOKE_CHECKPOINT)
    with torch.inference_mode():
        out["diffusers_base"] = unet(x, t, encoder_hidden_states=text).sample
        procs = apply_wplus_adapter_to_unet(unet, adapter, scale=1.0)
        assert len(procs) == 16
        ctx = encode_context(text, wplus, adapter)
        assert ctx.shape == (2, 81, 768)
        for weight in (0.0, 1.0):
            set_wplus_scale(unet, weight)
            out[f"diffusers_{weight:g}"] = unet(x, t, encoder_hidden_states=ctx).sample
        cfg_ctx = torch.cat([encode_context(text[:1], None, adapter), encode_context(text[1:], wplus, adapter)])
        out["diffusers_cfg"] = unet(x, t, encoder_hidden_states=cfg_ctx).sample
    del unet, procs
    gc.collect()
    return out


def _rel(a: torch.Tensor, b: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - b).abs().max() / ref.abs().max())


def test_unpatched_unets_agree(outputs):
    """The weight conversion and both UNet implementations agree before any W+ patch."""
    base = outputs["comfy_base"]
    assert base.shape == (2, 4, 8, 8) and torch.isfinite(base).all()
    assert _rel(outputs["diffusers_base"], base, base) < TOL


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_patched_unets_agree(outputs, weight):
    base = outputs["comfy_base"]
    comfy, diff = outputs[f"comfy_{weight:g}"], outputs[f"diffusers_{weight:g}"]
    assert _rel(comfy, diff, base) < TOL, f"weight {weight}: ComfyUI vs diffusers differ"
    if weight == 0:  # λ = 0 is the unpatched UNet on both sides
        assert _rel(comfy, base, base) < TOL and _rel(diff, outputs["diffusers_base"], base) < TOL
    else:  # the W+ effect is far above the tolerance on both sides, so the parity check can fail
        assert _rel(comfy, base, base) > 100 * TOL
        assert _rel(diff, outputs["diffusers_base"], base) > 100 * TOL


def test_cfg_batch_agrees_with_uncond_tokens(outputs):
    """ComfyUI's uncond chunk gets WProj(0) tokens, as diffusers' encode_context(text, None)."""
    base = outputs["comfy_base"]
    comfy, diff = outputs["comfy_cfg"], outputs["diffusers_cfg"]
    assert _rel(comfy, diff, base) < TOL
    # row 1 (cond) equals the all-cond call; row 0 (uncond tokens) differs from it by far more than TOL
    assert _rel(comfy[1:], outputs["comfy_1"][1:], base) < TOL
    assert _rel(comfy[:1], outputs["comfy_1"][:1], base) > 100 * TOL
