"""InstantID / PSTF patch on ComfyUI's own SDXL UNet (the smoke SDXL, in-process on the CPU) and parity with diffusers.

Parity: the ComfyUI patch (attn2 replaces, ID/W+ tokens held in the patch) and the diffusers processors
(:func:`models.pstf.diffusers_unet.apply_pstf_to_unet`, context ``[text | ID | W+]``) run on the *same*
weights: diffusers' ``UNet2DConditionModel`` is built on the meta device and given ComfyUI's own parameter
tensors through diffusers' ``convert_ldm_unet_checkpoint`` (renaming only, shared storage, no second
10 GB copy). Both are called on the raw UNet input with the same vector conditioning, so the noise
predictions must agree to fp32 rounding: ``TOL`` of the output scale.

The module loads the SDXL UNet once (fp32, 10.3 GB; peak RSS measured 17.3 GB with the fp32 PSTF weights and
the diffusers processors) and frees it afterwards; run this tier under the heavy lock. It is named to run
before modules that keep an SD1.5 model for the whole session. ``--log-cli-level=INFO`` prints the measured
parity errors.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import logging
from collections import Counter

import pytest
import torch

logger = logging.getLogger(__name__)

TOL = 1e-4  # max |a - b| / max |unpatched ComfyUI output|
SIGMAS = torch.linspace(14.6, 0.03, 11)  # a 10-step schedule
STEP = 5
SDXL_DIFFUSERS_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it for the process otherwise)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return
    libc.malloc_trim(0)


@pytest.fixture(scope="module")
def sdxl(comfy_env, free_comfy_servers):
    """ComfyUI's model of the smoke SDXL checkpoint (UNet only, fp32), loaded once for this module."""
    import comfy.model_base
    import comfy.model_management
    import comfy.sd

    from likeness.tools.smoke.writers import SMOKE_SDXL_CHECKPOINT

    free_comfy_servers()
    path = comfy_env.models / "checkpoints" / SMOKE_SDXL_CHECKPOINT
    model = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)[0]
    assert isinstance(model.model, comfy.model_base.SDXL), f"{path.name} was detected as {type(model.model).__name__}"
    yield model
    del model
    comfy.model_management.unload_all_models()
    gc.collect()
    release_freed_memory()


def _loaded(comfy_env, name: str, fp32: bool = False):
    from likeness.models.pstf.model import load_pstf_adapter
    from likeness.nodes.patching import LoadedPSTF

    adapter = load_pstf_adapter(comfy_env.models / name)
    return LoadedPSTF.wrap(adapter.float() if fp32 else adapter, name)


@pytest.fixture(scope="module")
def instantid(comfy_env):
    return _loaded(comfy_env, "instantid/ip-adapter.bin")


def _emb(batch=1, seed=0):
    return torch.randn(batch, 512, generator=torch.Generator().manual_seed(seed)) * 20


def _wplus(batch=1, seed=1):
    return torch.randn(batch, 18, 512, generator=torch.Generator().manual_seed(seed))


def _inputs(rows=2, size=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(rows, 4, size, size, generator=g),
        "ctx": torch.randn(rows, 77, 2048, generator=g),
        "y": torch.randn(rows, 2816, generator=g),
    }


def _run(model, inputs=None, cond_or_uncond=(0,), step=STEP):
    """One UNet call through ComfyUI's BaseModel, with the transformer_options the sampler would pass."""
    inputs = inputs or _inputs()
    n = len(cond_or_uncond)
    x, ctx, y = (inputs[k].repeat(n, *([1] * (inputs[k].ndim - 1))) for k in ("x", "ctx", "y"))
    sigma = SIGMAS[step].repeat(x.shape[0])
    options = dict(model.model_options.get("transformer_options", {}))
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigma, sample_sigmas=SIGMAS)
    with torch.inference_mode():
        return model.model.apply_model(x, sigma, c_crossattn=ctx, y=y, transformer_options=options).float()


class _Spy:
    """Counts the calls of a replace it wraps (tests only: production replaces keep no counters)."""

    def __init__(self, inner, key, hits: Counter):
        self.inner, self.key, self.hits = inner, key, hits

    def __call__(self, q, k, v, extra_options):
        self.hits[self.key] += 1
        return self.inner(q, k, v, extra_options)


def test_every_sdxl_site_is_hit_exactly_once_per_unet_call(sdxl, instantid):
    from likeness.nodes.patching import apply_pstf, discover_attn2_sites

    sites = discover_attn2_sites(sdxl)
    assert len(sites) == 70 and [k for k in sites if k[0] == "middle"] == [("middle", 0, i) for i in range(10)]
    patched, _, _ = apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0)
    replaces = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert set(replaces) == set(sites)
    spied, hits = patched.clone(), Counter()
    for key, fn in replaces.items():
        spied.set_model_attn2_replace(_Spy(fn, key, hits), *key)
    dead = Counter()  # a popular InstantID port keys the middle block ("middle", 1, i): ComfyUI never calls it
    spied.set_model_attn2_replace(_Spy(replaces[("middle", 0, 0)], ("middle", 1, 0), dead), "middle", 1, 0)
    _run(spied, cond_or_uncond=(1, 0))
    assert hits == Counter(dict.fromkeys(sites, 1)) and not dead


def test_weight_zero_is_bit_identical_and_the_input_model_is_untouched(sdxl, instantid):
    from likeness.nodes.patching import apply_pstf

    before = copy.deepcopy(sdxl.model_options)
    base = _run(sdxl, cond_or_uncond=(1, 0))
    zero, _, _ = apply_pstf(sdxl, instantid, _emb(), 0.0, 0.0, 1.0)
    assert torch.equal(_run(zero, cond_or_uncond=(1, 0)), base)
    one, _, identity = apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0)
    assert (_run(one, cond_or_uncond=(1, 0)) - base).abs().max() > 1e-3
    assert sdxl.model_options == before
    assert identity.cond.shape == (1, 16, 2048) and identity.uncond.shape == (1, 16, 2048)


def test_start_and_end_follow_the_step_window(sdxl, instantid):
    from likeness.nodes.patching import apply_pstf

    patched, _, _ = apply_pstf(sdxl, instantid, _emb(), 0.8, 0.2, 0.8)
    for step, active in [(2, False), (3, True), (7, True), (8, False)]:
        same = torch.equal(_run(patched, step=step), _run(sdxl, step=step))
        assert same != active, f"step {step}: expected {'patched' if active else 'plain'}"


def test_uncond_chunks_get_the_tokens_of_a_zero_embedding(sdxl, instantid):
    from likeness.nodes.patching import apply_pstf

    patched, _, _ = apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0)
    cfg = _run(patched, cond_or_uncond=(1, 0))  # uncond first, as ComfyUI batches at cfg > 1
    of_zero, _, _ = apply_pstf(sdxl, instantid, torch.zeros(1, 512), 0.8, 0.0, 1.0)  # Resampler(0) = uncond tokens
    torch.testing.assert_close(cfg[:2], _run(of_zero), rtol=0, atol=2e-4)
    torch.testing.assert_close(cfg[2:], _run(patched), rtol=0, atol=2e-4)
    assert (cfg[:2] - cfg[2:]).abs().max() > 1e-2


def test_mask_confines_and_wrapping_keeps_an_existing_replace(sdxl, instantid):
    from comfy.ldm.modules.attention import optimized_attention

    from likeness.nodes.patching import apply_pstf

    calls = []

    def other(q, k, v, extra_options):  # e.g. an IPAdapter-style replace keyed (block, number)
        calls.append(extra_options["block"])
        return optimized_attention(q, k, v, extra_options["n_heads"]) * 1.5

    first = sdxl.clone()
    first.set_model_attn2_replace(other, "input", 4)
    before = dict(first.model_options["transformer_options"]["patches_replace"]["attn2"])
    only_other = _run(first)
    stacked, _, _ = apply_pstf(first, instantid, _emb(), 0.8, 0.0, 1.0)
    zero, _, _ = apply_pstf(first, instantid, _emb(), 0.0, 0.0, 1.0)
    calls.clear()
    assert not torch.allclose(_run(stacked), only_other, atol=1e-4)
    assert calls == [("input", 4), ("input", 4)]  # the earlier replace still runs, once per transformer block
    assert torch.equal(_run(zero), only_other)
    assert first.model_options["transformer_options"]["patches_replace"]["attn2"] == before
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1.0
    masked, _, _ = apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0, mask=mask)
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 16, 640, generator=g),
        torch.randn(2, 77, 640, generator=g),
        torch.randn(2, 77, 640, generator=g),
    )
    options = {"n_heads": 10, "cond_or_uncond": [0], "sigmas": SIGMAS[5].repeat(2), "sample_sigmas": SIGMAS,
               "activations_shape": [2, 640, 4, 4], "attn_precision": None}  # fmt: skip
    out = masked.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 4, 0)](q, k, v, options)
    plain = optimized_attention(q, k, v, 10).view(2, 4, 4, 640)
    out = out.view(2, 4, 4, 640)
    assert torch.equal(out[:, :, 2:], plain[:, :, 2:]) and not torch.allclose(out[:, :, :2], plain[:, :, :2])


def _tiny_sd15():
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"model_channels": 32, "use_linear_in_transformer": False, "context_dim": 768, "adm_in_channels": None,
           "use_temporal_attention": False, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1],
           "channel_mult": [1], "transformer_depth": [1], "transformer_depth_middle": 1,
           "transformer_depth_output": [1, 1], "num_heads": 2, "use_spatial_transformer": True, "legacy": False,
           "image_size": 32, "use_checkpoint": False}  # fmt: skip
    model = comfy.supported_models.SD15(cfg).get_model({})
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def test_sd15_models_and_wplus_on_instantid_are_refused(instantid):
    from likeness.models.errors import LikenessError
    from likeness.models.face.types import Face
    from likeness.nodes.face_common import DetectedFaces
    from likeness.nodes.pstf_nodes import LikenessApplyPSTF

    face = Face([10, 10, 60, 60], 0.9, [[20, 20], [40, 20], [30, 30], [22, 40], [38, 40]], embedding=_emb()[0].numpy(),
                embedding_model="antelopev2/glintr100.onnx")  # fmt: skip
    faces = DetectedFaces([[face]], [(64, 64)], "insightface")
    with pytest.raises(LikenessError, match="context width 768.*W\\+ adapter nodes"):
        LikenessApplyPSTF.execute(_tiny_sd15(), instantid, 0.8, 0.0, 1.0, faces=faces)


def test_wplus_input_needs_pstf_weights(sdxl, instantid):
    from likeness.models.errors import LikenessError
    from likeness.nodes.patching import apply_pstf

    with pytest.raises(LikenessError, match="InstantID \\(identity stream only\\).*PSTF-AttControl weights"):
        apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0, wplus=_wplus())
    with pytest.raises(LikenessError, match="hold_background needs the face mask"):
        apply_pstf(sdxl, instantid, _emb(), 0.8, 0.0, 1.0, mask_mode="hold_background")


# --- PSTF (both streams): per-latent W+, hold_background, and parity with diffusers -----------


@pytest.fixture(scope="module")
def pstf(comfy_env):
    """The smoke PSTF file in fp32 (3.4 GB): the diffusers processors need fp32 weights next to the fp32 UNet."""
    loaded = _loaded(comfy_env, "pstf/pytorch_model.bin", fp32=True)
    yield loaded
    del loaded
    gc.collect()


def test_a_wplus_batch_maps_one_code_per_latent(sdxl, pstf):
    from likeness.models.errors import LikenessError
    from likeness.nodes.patching import apply_pstf

    codes = _wplus(2, seed=4)
    both, _, _ = apply_pstf(sdxl, pstf, _emb(), 1.0, 0.0, 1.0, wplus=codes)
    second, _, _ = apply_pstf(sdxl, pstf, _emb(), 1.0, 0.0, 1.0, wplus=codes[1:])
    out, ref = _run(both), _run(second)
    torch.testing.assert_close(out[1], ref[1], rtol=0, atol=2e-4)
    assert (out[0] - ref[0]).abs().max() > 1e-2
    three, _, _ = apply_pstf(sdxl, pstf, _emb(), 1.0, 0.0, 1.0, wplus=_wplus(3))
    with pytest.raises(LikenessError, match="W\\+ input holds 3 entries but the latent batch is 2"):
        _run(three)


def test_hold_background_copies_the_reference_row_outside_the_mask(sdxl, pstf):
    from likeness.models.attention.schedule import mask_to_token_grid
    from likeness.nodes.patching import apply_pstf
    from likeness.nodes.patching.pstf import HoldBackgroundPatch

    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1.0  # the "face"
    sweep = _wplus(3, seed=5)
    held, _, _ = apply_pstf(sdxl, pstf, _emb(), 1.0, 0.0, 1.0, wplus=sweep, mask=mask, mask_mode="hold_background",
                            reference_row=1)  # fmt: skip
    attn1 = held.model_options["transformer_options"]["patches"]["attn1_output_patch"]
    assert any(isinstance(p, HoldBackgroundPatch) for p in attn1)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(6, 64, 640, generator=g) for _ in range(3))
    options = {"n_heads": 10, "cond_or_uncond": [1, 0], "sigmas": SIGMAS[5].repeat(6), "sample_sigmas": SIGMAS,
               "activations_shape": [6, 640, 8, 8], "attn_precision": None}  # fmt: skip
    out = held.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 4, 1)](q, k, v, options)
    outside = mask_to_token_grid(mask[None], (8, 8), [1, 0], 6)[0, :, 0] == 0
    for chunk in (0, 3):
        for row in range(3):
            assert torch.equal(out[chunk + row][outside], out[chunk + 1][outside])
    assert (out[3][~outside] - out[4][~outside]).abs().max() > 1e-3  # inside the face the sweep still differs
    # whole UNet, same noise for every sweep point: the background moves far less than without holding it
    inputs = {key: value[:1].repeat(3, *([1] * (value.ndim - 1))) for key, value in _inputs(rows=1, size=16).items()}
    free, _, _ = apply_pstf(sdxl, pstf, _emb(), 1.0, 0.0, 1.0, wplus=sweep)
    corner = (slice(None), slice(None), slice(0, 3), slice(0, 3))  # far from the mask
    spread_free = (_run(free, inputs)[corner] - _run(free, inputs)[1:2][corner]).abs().max()
    held_out = _run(held, inputs)
    spread_held = (held_out[corner] - held_out[1:2][corner]).abs().max()
    assert spread_held < 0.5 * spread_free, f"held {spread_held:.3g} vs free {spread_free:.3g}"


def _diffusers_unet(sdxl):
    """diffusers' SDXL UNet holding ComfyUI's own parameter tensors (converted names, shared storage)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        from diffusers import UNet2DConditionModel
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    comfy_unet = sdxl.model.diffusion_model
    assert next(comfy_unet.parameters()).dtype == torch.float32, "parity needs ComfyUI's UNet in fp32"
    ldm = {"model.diffusion_model." + k: v for k, v in comfy_unet.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(ldm, dict(SDXL_DIFFUSERS_CONFIG))
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_DIFFUSERS_CONFIG)
    assert not set(unet.state_dict()) ^ set(converted)
    unet.load_state_dict(converted, strict=True, assign=True)
    shared = converted["mid_block.attentions.0.transformer_blocks.9.attn2.to_k.weight"]
    assert shared.data_ptr() == comfy_unet.middle_block[1].transformer_blocks[9].attn2.to_k.weight.data_ptr()
    return unet.eval()


def _comfy_unet(model, x, t, ctx, y, cond_or_uncond=(0,)):
    options = dict(model.model_options.get("transformer_options", {}))
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=SIGMAS[STEP].repeat(x.shape[0]), sample_sigmas=SIGMAS)
    with torch.inference_mode():
        return model.model.diffusion_model(x, timesteps=t, context=ctx, y=y, transformer_options=options).float()


@pytest.fixture(scope="module")
def parity(sdxl, pstf, instantid):
    """Every output the parity tests compare, computed once."""
    from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet, encode_context, remove_pstf
    from likeness.nodes.patching import apply_pstf

    unet = _diffusers_unet(sdxl)
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500.0, 137.0])
    text, pooled = torch.randn(2, 77, 2048, generator=g), torch.randn(2, 1280, generator=g)
    time_ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]).repeat(2, 1)
    y = torch.cat([pooled, unet.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=1)  # ComfyUI's adm vector
    added = {"text_embeds": pooled, "time_ids": time_ids}
    emb, wplus = _emb(seed=8), _wplus(seed=9)
    out = {"comfy_base": _comfy_unet(sdxl, x, t, text, y)}
    with torch.inference_mode():
        out["diffusers_base"] = unet(x, t, text, added_cond_kwargs=added).sample
    ids, ws = pstf.adapter.id_tokens(emb), pstf.adapter.wplus_tokens(wplus)
    null_ids, null_ws = pstf.adapter.uncond_id_tokens(), pstf.adapter.uncond_wplus_tokens()
    patched, _, _ = apply_pstf(sdxl, pstf, emb, 1.0, 0.0, 1.0, wplus=wplus, weight_wplus=0.6)
    out["comfy_pstf"] = _comfy_unet(patched, x, t, text, y)
    out["comfy_cfg"] = _comfy_unet(patched, x, t, text, y, cond_or_uncond=(1, 0))  # row 0 uncond, row 1 cond
    apply_pstf_to_unet(unet, pstf.adapter, scale=1.0, scale_style=0.6)
    with torch.inference_mode():
        out["diffusers_pstf"] = unet(x, t, encode_context(text, ids, ws), added_cond_kwargs=added).sample
        cfg_ctx = torch.cat([encode_context(text[:1], null_ids, null_ws), encode_context(text[1:], ids, ws)])
        out["diffusers_cfg"] = unet(x, t, cfg_ctx, added_cond_kwargs=added).sample
    remove_pstf(unet)
    patched, _, _ = apply_pstf(sdxl, instantid, emb, 0.8, 0.0, 1.0)
    out["comfy_instantid"] = _comfy_unet(patched, x, t, text, y)
    apply_pstf_to_unet(unet, instantid.adapter, scale=0.8)
    with torch.inference_mode():
        ctx = encode_context(text, instantid.adapter.id_tokens(emb))
        out["diffusers_instantid"] = unet(x, t, ctx, added_cond_kwargs=added).sample
    remove_pstf(unet)
    del unet, patched
    gc.collect()
    return out


def _rel(a, b, ref):
    return float((a - b).abs().max() / ref.abs().max())


def test_unpatched_unets_agree(parity):
    base = parity["comfy_base"]
    assert base.shape == (2, 4, 8, 8) and torch.isfinite(base).all()
    logger.info(
        "parity unpatched: %.2e of the output scale %.3g", _rel(parity["diffusers_base"], base, base), base.abs().max()
    )
    assert _rel(parity["diffusers_base"], base, base) < TOL


@pytest.mark.parametrize("case", ["pstf", "cfg", "instantid"])
def test_comfy_patch_agrees_with_the_diffusers_processors(parity, case):
    base = parity["comfy_base"]
    comfy, diff = parity[f"comfy_{case}"], parity[f"diffusers_{case}"]
    logger.info(
        "parity %s: %.2e of the output scale; effect %.2e", case, _rel(comfy, diff, base), _rel(comfy, base, base)
    )
    assert _rel(comfy, diff, base) < TOL, f"{case}: ComfyUI vs diffusers differ by {_rel(comfy, diff, base):.2e}"
    assert _rel(comfy, base, base) > 100 * TOL  # the adapter's effect is far above the tolerance
    if case == "cfg":  # the cond row equals the all-cond call; the uncond row (Resampler(0) tokens) does not
        assert _rel(comfy[1:], parity["comfy_pstf"][1:], base) < TOL
        assert _rel(comfy[:1], parity["comfy_pstf"][:1], base) > 100 * TOL
