"""The W+ adapter patch on ComfyUI's real SD1.5 UNet (smoke weights), in-process on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

SIGMAS = torch.linspace(14.6, 0.03, 11)  # a 10-step schedule


@pytest.fixture(scope="module")
def sd15(sd15_checkpoint):
    return sd15_checkpoint[0]


@pytest.fixture(scope="module")
def loaded_adapter(comfy_env):
    from likeness.models.wplus_adapter.model import load_wplus_adapter
    from likeness.nodes.patching import LoadedWPlusAdapter

    path = comfy_env.models / "wplus" / "wplus_adapter.bin"
    return LoadedWPlusAdapter.wrap(load_wplus_adapter(path), path.name)


def _wplus(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 18, 512, generator=g)


def _run(model, step=5, cond_or_uncond=(0,), seed=1):
    """One UNet call with the model's transformer_options, as the sampler makes it."""
    g = torch.Generator().manual_seed(seed)
    rows = 2
    batch = rows * len(cond_or_uncond)
    x = torch.randn(rows, 4, 8, 8, generator=g).repeat(len(cond_or_uncond), 1, 1, 1)
    ctx = torch.randn(rows, 77, 768, generator=g).repeat(len(cond_or_uncond), 1, 1)
    sigma = SIGMAS[step].repeat(batch)
    options = dict(model.model_options.get("transformer_options", {}))
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigma, sample_sigmas=SIGMAS)
    with torch.inference_mode():
        return model.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=options)


def test_every_sd15_site_is_discovered_and_hit_once_per_call(sd15, loaded_adapter, count_site_calls):
    from likeness.nodes.patching import apply_wplus_adapter, discover_attn2_sites

    sites = discover_attn2_sites(sd15)
    assert len(sites) == 16 and ("middle", 0, 0) in sites
    assert {k: v[1] for k, v in sites.items()} == {s.comfy_key: s.hidden_size for s in loaded_adapter.adapter.sites}
    patched, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    with count_site_calls() as hits:
        _run(patched)
    assert dict(hits) == {key: 1 for key in sites}


def test_input_model_is_not_mutated_and_weight_zero_is_bit_identical(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    before = copy.deepcopy(sd15.model_options)
    base = _run(sd15)
    zero, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 0.0, 0.0, 1.0)
    assert torch.equal(_run(zero), base)
    one, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    assert not torch.allclose(_run(one), base, atol=1e-4)
    assert sd15.model_options == before
    assert "patches_replace" not in sd15.model_options.get("transformer_options", {})


def test_start_and_end_follow_the_official_step_delay(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    patched, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.2, 0.8)
    for step, active in [(2, False), (3, True), (7, True), (8, False)]:
        same = torch.equal(_run(patched, step=step), _run(sd15, step=step))
        assert same != active, f"step {step}: expected {'W+' if active else 'plain'}"


def test_uncond_chunks_use_the_projection_of_a_zero_wplus(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    patched, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    out = _run(patched, cond_or_uncond=(1, 0))  # uncond first, as ComfyUI does at cfg > 1
    zeros, _ = apply_wplus_adapter(sd15, loaded_adapter, torch.zeros(1, 18, 512), 1.0, 0.0, 1.0)
    cond_of_zero = _run(zeros, cond_or_uncond=(0,))
    cond_only = _run(patched, cond_or_uncond=(0,))  # cfg 1: cond chunk only
    # batch-4 vs batch-2 calls round differently (~3e-5); the W+ effect itself is orders larger
    torch.testing.assert_close(out[:2], cond_of_zero, rtol=0, atol=2e-4)
    torch.testing.assert_close(out[2:], cond_only, rtol=0, atol=2e-4)
    assert (out[:2] - cond_only).abs().max() > 1e-2


def test_a_wplus_batch_maps_one_code_per_latent(sd15, loaded_adapter):
    from likeness.models.errors import LikenessError
    from likeness.nodes.patching import apply_wplus_adapter

    codes = _wplus(2, seed=3)
    both, _ = apply_wplus_adapter(sd15, loaded_adapter, codes, 1.0, 0.0, 1.0)
    first, _ = apply_wplus_adapter(sd15, loaded_adapter, codes[:1], 1.0, 0.0, 1.0)
    second, _ = apply_wplus_adapter(sd15, loaded_adapter, codes[1:], 1.0, 0.0, 1.0)
    out = _run(both)
    torch.testing.assert_close(out[0], _run(first)[0], rtol=0, atol=2e-4)
    torch.testing.assert_close(out[1], _run(second)[1], rtol=0, atol=2e-4)
    assert (out[0] - _run(second)[0]).abs().max() > 1e-2
    three, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(3), 1.0, 0.0, 1.0)
    with pytest.raises(LikenessError, match="3 codes but the latent batch is 2"):
        _run(three)


def test_an_absent_code_leaves_its_latent_unconditioned(sd15, loaded_adapter):
    """Pass-through: the latent of an image without a face is exactly the unpatched UNet's, cond and uncond."""
    from likeness.nodes.patching import apply_wplus_adapter

    codes = _wplus(2, seed=5)
    present = torch.tensor([1.0, 0.0])
    patched, _ = apply_wplus_adapter(sd15, loaded_adapter, codes, 1.0, 0.0, 1.0, present=present)
    first, _ = apply_wplus_adapter(sd15, loaded_adapter, codes[:1], 1.0, 0.0, 1.0)
    for chunks in ((0,), (1, 0)):
        out, plain = _run(patched, cond_or_uncond=chunks), _run(sd15, cond_or_uncond=chunks)
        rows = out.shape[0] // len(chunks)
        for c in range(len(chunks)):
            torch.testing.assert_close(out[c * rows + 1], plain[c * rows + 1], rtol=0, atol=2e-4)
            assert (out[c * rows] - plain[c * rows]).abs().max() > 1e-2
    torch.testing.assert_close(_run(patched)[0], _run(first)[0], rtol=0, atol=2e-4)


def test_mask_confines_the_residual_to_masked_tokens(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    mask = torch.zeros(64, 64)
    mask[:, :32] = 1.0  # left half of the image
    patched, patch = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0, mask=mask)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 64, 320, generator=g),
        torch.randn(2, 77, 320, generator=g),
        torch.randn(2, 77, 320, generator=g),
    )
    options = {
        "n_heads": 8,
        "cond_or_uncond": [0],
        "sigmas": SIGMAS[5].repeat(2),
        "sample_sigmas": SIGMAS,
        "activations_shape": [2, 320, 8, 8],
        "attn_precision": None,
    }
    from comfy.ldm.modules.attention import optimized_attention

    plain = optimized_attention(q, k, v, 8)
    out = replace(q, k, v, options).view(2, 8, 8, 320)
    plain = plain.view(2, 8, 8, 320)
    assert torch.equal(out[:, :, 4:], plain[:, :, 4:])  # right half: untouched
    assert not torch.allclose(out[:, :, :4], plain[:, :, :4])


def test_stacking_wraps_an_existing_replace_without_mutating_it(sd15, loaded_adapter):
    from comfy.ldm.modules.attention import optimized_attention

    from likeness.nodes.patching import apply_wplus_adapter

    calls = []

    def other_patch(q, k, v, extra_options):  # e.g. an IPAdapter-style replace, keyed (block, number)
        calls.append(extra_options["block"])
        return optimized_attention(q, k, v, extra_options["n_heads"]) * 1.5

    first = sd15.clone()
    for key in [("input", 1), ("middle", 0)]:
        first.set_model_attn2_replace(other_patch, *key)
    before = dict(first.model_options["transformer_options"]["patches_replace"]["attn2"])
    only_other = _run(first)
    stacked, _ = apply_wplus_adapter(first, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    zero_stacked, _ = apply_wplus_adapter(first, loaded_adapter, _wplus(), 0.0, 0.0, 1.0)
    calls.clear()
    both = _run(stacked)
    assert sorted(calls) == [("input", 1), ("middle", 0)]  # the earlier patch still runs, once per site
    assert torch.equal(_run(zero_stacked), only_other)
    assert not torch.allclose(both, only_other, atol=1e-4)
    assert first.model_options["transformer_options"]["patches_replace"]["attn2"] == before


def test_sdxl_sized_context_is_refused_with_a_clear_message(loaded_adapter):
    from likeness.models.errors import LikenessError

    with pytest.raises(LikenessError, match="SDXL"):
        loaded_adapter.adapter.check_context_dim(2048)


def test_clones_share_the_patch_and_its_weights(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    patched, patch = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    clone = patched.clone()
    key = ("output", 11, 0)
    ours = patched.model_options["transformer_options"]["patches_replace"]["attn2"][key]
    theirs = clone.model_options["transformer_options"]["patches_replace"]["attn2"][key]
    assert theirs is ours  # ComfyUI shares patch objects between clones; nothing is copied
    layer = loaded_adapter.adapter.layer(ours.site)
    assert ours.patch.adapter.layer(ours.site).to_q_wplus.weight.data_ptr() == layer.to_q_wplus.weight.data_ptr()
    assert patch.models() == [loaded_adapter.patcher]  # ComfyUI's model management moves the adapter weights


def test_replace_follows_the_dtype_and_device_of_the_unet_activations(sd15, loaded_adapter):
    from likeness.nodes.patching import apply_wplus_adapter

    patched, _ = apply_wplus_adapter(sd15, loaded_adapter, _wplus(), 1.0, 0.0, 1.0)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("middle", 0, 0)]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1280, generator=g).bfloat16() for _ in range(3))
    options = {
        "n_heads": 8,
        "cond_or_uncond": [1, 0],
        "sigmas": SIGMAS[5].repeat(2),
        "sample_sigmas": SIGMAS,
        "activations_shape": [2, 1280, 2, 2],
        "attn_precision": None,
    }
    out = replace(
        q[:, :, :], k[:, :1].expand(2, 77, 1280).contiguous(), v[:, :1].expand(2, 77, 1280).contiguous(), options
    )
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 1280) and torch.isfinite(out.float()).all()
    assert loaded_adapter.adapter.dtype == torch.float32  # the stored weights are not converted in place


def test_folded_w_plus_keys_are_cached_per_site_and_equal_the_unfolded_branch(sd15, loaded_adapter):
    from comfy.ldm.modules.attention import optimized_attention

    from likeness.models.attention.schedule import tokens_for_chunks
    from likeness.models.wplus_adapter.attention import residual_wplus_attention
    from likeness.nodes.patching import apply_wplus_adapter

    codes = _wplus(2, seed=5)
    patched, patch = apply_wplus_adapter(sd15, loaded_adapter, codes, 1.0, 0.0, 1.0)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 64, 320, generator=g) for _ in range(3))
    options = {"n_heads": 8, "cond_or_uncond": [1, 0], "sigmas": SIGMAS[5].repeat(4), "sample_sigmas": SIGMAS}
    out = replace(q, k, v, options)
    cached = dict(patch._folded)
    assert len(cached) == 2  # the site's cond/uncond pair, and its arrangement for this chunk order
    assert torch.equal(replace(q, k, v, options), out)
    assert all(patch._folded[key] is value for key, value in cached.items()) and len(patch._folded) == 2
    # the folded branch is the official maths: h_t + MHA(to_q_wplus(h_t), k_w, v_w), uncond rows first
    adapter = loaded_adapter.adapter
    layer = adapter.layer(replace.site)
    with torch.no_grad():
        tokens = tokens_for_chunks(adapter.tokens(codes), adapter.uncond_tokens(1), [1, 0], 4)
        k_w, v_w = layer.project_tokens(tokens)
        ref = residual_wplus_attention(optimized_attention(q, k, v, 8), k_w, v_w, layer.to_q_wplus, 8, 1.0)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # another chunk order reuses the pair and arranges it anew; another dtype folds anew
    swapped = replace(q, k, v, dict(options, cond_or_uncond=[0, 1]))
    assert len(patch._folded) == 3 and not torch.allclose(swapped, out, atol=1e-3)
    low = replace(q.bfloat16(), k.bfloat16(), v.bfloat16(), options)
    assert low.dtype == torch.bfloat16 and len(patch._folded) == 5
    assert (low.float() - out).abs().max() < 0.1
