"""W+ adapter: residual maths, tokens, checkpoint loading and the diffusers integration (tiny UNet)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from likeness.models.attention.schedule import tokens_for_chunks
from likeness.models.attention.sdpa import sdpa_attention
from likeness.models.errors import CheckpointError, MissingModelError
from likeness.models.files.checkpoints import flatten
from likeness.models.wplus_adapter import processor as wplus_processor
from likeness.models.wplus_adapter.attention import fold_wplus_query, folded_wplus_attention, residual_wplus_attention
from likeness.models.wplus_adapter.model import (
    WPlusAdapter,
    WPlusAttnProcessor,
    WProjModel,
    build_wplus_adapter_checkpoint,
    load_wplus_adapter,
    wplus_adapter_shapes,
)
from likeness.models.wplus_adapter.sites import SD15_WPLUS_SITES, WPlusSite

diffusers = pytest.importorskip("diffusers")

_T = "transformer_blocks.0.attn2.processor"
TINY_SITES = (
    WPlusSite(1, f"down_blocks.0.attentions.0.{_T}", ("input", 1, 0), 32),
    WPlusSite(3, f"up_blocks.1.attentions.0.{_T}", ("output", 3, 0), 32),
    WPlusSite(5, f"up_blocks.1.attentions.1.{_T}", ("output", 4, 0), 32),
    WPlusSite(7, f"mid_block.attentions.0.{_T}", ("middle", 0, 0), 64),
)
"""Explicit table of the tiny test UNet (blocks (32, 64), layers_per_block 1, ctx 32)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _residual_inputs(batch: int = 2, n: int = 6, c: int = 16):
    g = _gen(0)
    h_t = torch.randn(batch, n, c, generator=g)
    k = torch.randn(batch, 4, c, generator=g)
    v = torch.randn(batch, 4, c, generator=g)
    to_q = torch.nn.Linear(c, c, bias=False)
    with torch.no_grad():
        to_q.weight.copy_(torch.randn(c, c, generator=g) / math.sqrt(c))
    return h_t, k, v, to_q


# --- residual maths -----------------------------------------------------------------------------


def test_scale_zero_returns_h_t_itself_without_work():
    h_t, k, v, to_q = _residual_inputs()

    def never(*args):
        raise AssertionError("attention must not run at scale 0")

    out = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=0.0, attention_fn=never)
    assert out is h_t
    assert residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=0, attention_fn=never) is h_t


def test_residual_is_linear_in_scale_and_matches_explicit_softmax():
    h_t, k, v, to_q = _residual_inputs()
    out1 = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=1.0)
    out_half = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=0.5)
    delta = out1 - h_t
    assert delta.abs().max() > 1e-2
    torch.testing.assert_close(out_half - h_t, 0.5 * delta, atol=1e-6, rtol=0)
    # independent per-head softmax attention with query to_q(h_t)
    q = to_q(h_t).view(2, 6, 4, 4).transpose(1, 2)
    kh, vh = (t.view(2, 4, 4, 4).transpose(1, 2) for t in (k, v))
    probs = torch.softmax(q @ kh.transpose(-1, -2) / 2.0, dim=-1)
    h_w = (probs @ vh).transpose(1, 2).reshape(2, 6, 16)
    torch.testing.assert_close(out1, h_t + h_w, atol=1e-5, rtol=0)


def test_attention_fn_is_injected_and_batch_one_tokens_are_shared():
    h_t, k, v, to_q = _residual_inputs()
    calls = []

    def spy(q, kk, vv, heads):
        calls.append((tuple(q.shape), tuple(kk.shape), heads))
        return sdpa_attention(q, kk, vv, heads)

    shared = residual_wplus_attention(h_t, k[:1], v[:1], to_q, heads=4, scale=0.8, attention_fn=spy)
    tiled = residual_wplus_attention(h_t, k[:1].repeat(2, 1, 1), v[:1].repeat(2, 1, 1), to_q, 4, 0.8)
    assert calls == [((2, 6, 16), (2, 4, 16), 4)]
    torch.testing.assert_close(shared, tiled, atol=1e-6, rtol=0)


def test_per_row_tensor_scale_and_weight_tensor_projection():
    h_t, k, v, to_q = _residual_inputs()
    out = residual_wplus_attention(h_t, k, v, to_q.weight, heads=4, scale=torch.tensor([0.0, 0.7]))
    ref = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=0.7)
    assert torch.equal(out[0], h_t[0])
    torch.testing.assert_close(out[1], ref[1], atol=1e-6, rtol=0)


def test_residual_rejects_mismatched_widths_and_batches():
    h_t, k, v, to_q = _residual_inputs()
    with pytest.raises(ValueError, match="width 8/8 but the layer width is 16"):
        residual_wplus_attention(h_t, k[..., :8], v[..., :8], to_q, 4, 1.0)
    with pytest.raises(ValueError, match="batch 3 but the attention batch is 2"):
        residual_wplus_attention(h_t, k.repeat(2, 1, 1)[:3], v, to_q, 4, 1.0)


def test_folded_query_gives_the_residual_of_the_unfolded_maths():
    h_t, k, v, to_q = _residual_inputs()
    folded = fold_wplus_query(to_q, k, v, heads=4)
    assert folded.logits.shape == (2, 16, 16) and folded.values.shape == (2, 16, 16)
    # block-diagonal values: token t of head h only feeds head h's 4 columns
    assert torch.equal(folded.values[:, 4:8, :4], torch.zeros(2, 4, 4))
    for scale in (1.0, 0.3, torch.tensor([0.0, 0.7]), torch.rand(2, 6, 1, generator=_gen(5))):
        ref = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=scale)
        torch.testing.assert_close(folded_wplus_attention(h_t, folded, scale), ref, atol=2e-6, rtol=0)
    assert folded_wplus_attention(h_t, folded, 0) is h_t
    # one token set shared by every row (batch 1) equals the same set tiled
    shared = fold_wplus_query(to_q.weight, k[:1], v[:1], heads=4)
    ref = residual_wplus_attention(h_t, k[:1], v[:1], to_q, heads=4, scale=0.8)
    torch.testing.assert_close(folded_wplus_attention(h_t, shared, 0.8), ref, atol=2e-6, rtol=0)


def test_folded_attention_keeps_the_activation_dtype_and_checks_shapes():
    h_t, k, v, to_q = _residual_inputs()
    folded = fold_wplus_query(to_q, k.bfloat16(), v.bfloat16(), heads=4)
    out = folded_wplus_attention(h_t.bfloat16(), folded, 1.0)
    assert out.dtype == torch.bfloat16
    ref = residual_wplus_attention(h_t, k, v, to_q, heads=4, scale=1.0)
    assert (out.float() - ref).abs().max() < 0.05
    with pytest.raises(ValueError, match="width 16 but the layer width is 8"):
        folded_wplus_attention(h_t[..., :8], fold_wplus_query(to_q, k, v, 4), 1.0)
    with pytest.raises(ValueError, match="batch 2 but the attention batch is 3"):
        folded_wplus_attention(h_t.repeat(2, 1, 1)[:3], fold_wplus_query(to_q, k, v, 4), 1.0)
    with pytest.raises(ValueError, match="do not belong to one attention site"):
        fold_wplus_query(to_q, k, v[..., :8], 4)
    with pytest.raises(ValueError, match="not divisible by heads=5"):
        fold_wplus_query(to_q, k, v, 5)


# --- tokens -------------------------------------------------------------------------------------


def test_uncond_tokens_equal_layernorm_bias_and_tokens_shape():
    torch.manual_seed(0)
    adapter = WPlusAdapter(cross_attention_dim=32, sites=TINY_SITES)
    with torch.no_grad():
        adapter.w_proj.norm.bias.copy_(torch.randn(32, generator=_gen(1)))
        adapter.w_proj.norm.weight.copy_(1 + 0.1 * torch.randn(32, generator=_gen(2)))
    assert torch.equal(adapter.uncond_tokens(2), adapter.w_proj.norm.bias.expand(2, 4, 32))
    w = torch.randn(3, 18, 512, generator=_gen(3))
    tokens = adapter.tokens(w)
    assert tokens.shape == (3, 4, 32)
    assert not torch.allclose(tokens[0], tokens[1])
    torch.testing.assert_close(adapter.tokens(w[0]), tokens[:1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\[B, 18, 512\], got shape \(1, 14, 512\)"):
        adapter.w_proj(torch.zeros(1, 14, 512))


def test_wproj_rows_are_grouped_4_4_4_6():
    model = WProjModel(cross_attention_dim=8)
    w = torch.zeros(1, 18, 512)
    base = model(w).detach()
    w[0, 12] = 1.0  # row 12 belongs to the last group only
    changed = (model(w).detach() - base).abs().amax(dim=-1)[0]
    assert changed[:3].max() == 0 and changed[3] > 0
    with pytest.raises(ValueError, match="exactly 4 tokens"):
        WProjModel(64, clip_extra_context_tokens=16)


def test_tokens_for_chunks_follows_cond_or_uncond_order():
    cond, uncond = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    out = tokens_for_chunks(cond, uncond, [1, 0], batch=4)
    assert out[:, 0, 0].tolist() == [0, 0, 1, 1]
    per_latent = torch.arange(2.0).view(2, 1, 1).expand(2, 4, 2)
    assert tokens_for_chunks(per_latent, uncond, [0], 2)[:, 0, 0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="not a multiple"):
        tokens_for_chunks(cond, uncond, [1, 0], batch=3)


# --- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_ckpt():
    return build_wplus_adapter_checkpoint(seed=7)


def test_built_checkpoint_has_official_layout_and_is_deterministic(official_ckpt):
    flat = flatten(official_ckpt)
    assert {k: tuple(v.shape) for k, v in flat.items()} == wplus_adapter_shapes()
    assert len(flat) == 54 and all(torch.isfinite(v).all() for v in flat.values())
    again = flatten(build_wplus_adapter_checkpoint(seed=7))
    assert all(torch.equal(flat[k], again[k]) for k in flat)
    assert not torch.equal(flat["w_proj.norm.bias"], flatten(build_wplus_adapter_checkpoint(1))["w_proj.norm.bias"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_safetensors_with_flat_keys_is_accepted(official_ckpt, tmp_path, dtype):
    flat = {k: v.to(dtype).contiguous() for k, v in flatten(official_ckpt).items()}
    path = tmp_path / "wplus_adapter.safetensors"
    save_file(flat, str(path))
    adapter = load_wplus_adapter(path)
    assert adapter.dtype == dtype
    assert torch.equal(adapter.layer(31).to_q_wplus.weight, flat["wplus_adapter.31.to_q_wplus.weight"])
    assert adapter.tokens(torch.zeros(1, 18, 512)).dtype == dtype


def test_flat_prefixed_torch_file_is_accepted(official_ckpt, tmp_path):
    path = tmp_path / "flat.bin"
    torch.save(flatten(official_ckpt), path)
    adapter = load_wplus_adapter(path)
    assert adapter.dtype == torch.float32 and [s.index for s in adapter.sites] == list(range(1, 32, 2))
    assert torch.equal(adapter.w_proj.proj_3.weight, official_ckpt["w_proj"]["proj_3.weight"])


def test_truncated_garbage_and_wrong_files_raise_checkpoint_errors(official_ckpt, tmp_path):
    good = tmp_path / "good.bin"
    torch.save({"w_proj": official_ckpt["w_proj"]}, good)
    with pytest.raises(CheckpointError, match="48 missing keys, first: wplus_adapter.1.to_k_wplus.weight"):
        load_wplus_adapter(good)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_wplus_adapter(truncated)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(7, 250)) * 10)
    with pytest.raises(CheckpointError, match="not a checkpoint Likeness can read"):
        load_wplus_adapter(garbage)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a W\\+ adapter state dict"):
        load_wplus_adapter(tensor_only)
    with pytest.raises(MissingModelError):
        load_wplus_adapter(tmp_path / "absent.bin")


def test_non_finite_weights_and_sdxl_width_are_refused(official_ckpt, tmp_path):
    flat = {k: v.clone() for k, v in flatten(official_ckpt).items()}
    flat["wplus_adapter.5.to_v_wplus.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(flat, str(path))
    with pytest.raises(CheckpointError, match="wplus_adapter.5.to_v_wplus.weight contains NaN"):
        load_wplus_adapter(path)
    wide = {
        k: v
        for k, v in flatten(build_wplus_adapter_checkpoint(0, cross_attention_dim=2048)).items()
        if k.startswith("w_proj.") or k.startswith("wplus_adapter.1.")
    }
    path = tmp_path / "sdxl.safetensors"
    save_file(wide, str(path))
    with pytest.raises(CheckpointError, match=r"for SDXL \(context width 2048\).*SD1\.5 models only"):
        load_wplus_adapter(path)


def test_check_context_dim_names_both_families():
    adapter = WPlusAdapter(cross_attention_dim=32, sites=TINY_SITES)
    adapter.cross_attention_dim = 768  # pretend: an SD1.5 adapter
    with pytest.raises(
        CheckpointError, match=r"SD1\.5 \(context width 768\) but the MODEL is SDXL \(context width 2048\)"
    ):
        adapter.check_context_dim(2048)
    adapter.check_context_dim(768)


# --- diffusers integration ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
    ).eval()
    adapter = WPlusAdapter(cross_attention_dim=32, sites=TINY_SITES).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=_gen(p.numel())) / math.sqrt(p.shape[-1]))
    g = _gen(11)
    inputs = {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "text": torch.randn(2, 7, 32, generator=g),
        "wplus": torch.randn(1, 18, 512, generator=g),
    }
    return unet, adapter, inputs


def _predict(unet, sample, context):
    with torch.inference_mode():
        return unet(sample, torch.tensor([500.0]), encoder_hidden_states=context).sample


def test_unet_scale_zero_is_bit_identical_and_nonzero_changes(tiny, monkeypatch):
    unet, adapter, x = tiny
    from likeness.models.wplus_adapter.diffusers_unet import (
        apply_wplus_adapter_to_unet,
        encode_context,
        remove_wplus_adapter,
        set_wplus_scale,
    )

    baseline = _predict(unet, x["sample"], x["text"])
    cond = encode_context(x["text"][:1], x["wplus"], adapter)
    uncond = encode_context(x["text"][1:], None, adapter)
    context = torch.cat([cond, uncond])
    assert context.shape == (2, 11, 32)
    assert torch.equal(uncond[0, 7:], adapter.w_proj.norm.bias.expand(4, 32))
    installed = apply_wplus_adapter_to_unet(unet, adapter, scale=0.0)
    try:
        assert sorted(installed) == [1, 3, 5, 7]
        procs = list(unet.attn_processors.values())
        assert [type(p).__name__ for p in procs] == ["AttnProcessor2_0", "WPlusAttnProcessor"] * 4
        assert torch.equal(installed[7].to_q_wplus.weight, adapter.layer(7).to_q_wplus.weight)  # same values
        assert torch.equal(_predict(unet, x["sample"], context), baseline)

        calls: list[int] = []
        original = WPlusAttnProcessor.__call__

        def counting(self, *args, **kwargs):
            calls.append(id(self))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(WPlusAttnProcessor, "__call__", counting)
        branch = []
        real_residual = wplus_processor.folded_wplus_attention
        monkeypatch.setattr(
            wplus_processor, "folded_wplus_attention", lambda *a, **k: branch.append(1) or real_residual(*a, **k)
        )
        assert set_wplus_scale(unet, 1.0) == 4
        patched = _predict(unet, x["sample"], context)
        assert sorted(calls) == sorted(id(p) for p in installed.values())  # each site exactly once
        assert len(branch) == 4
        assert (patched - baseline).abs().max() > 1e-4
        # the uncond half has its own (bias) tokens; different W+ gives a different prediction
        other = encode_context(x["text"][:1], -x["wplus"], adapter)
        assert not torch.equal(_predict(unet, x["sample"][:1], other), patched[:1])
    finally:
        assert remove_wplus_adapter(unet) == 4
    assert torch.equal(_predict(unet, x["sample"], x["text"]), baseline)


def test_unet_site_table_is_checked_before_installing(tiny):
    unet, adapter, _ = tiny
    from likeness.models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet

    missing = WPlusAdapter(cross_attention_dim=32, sites=TINY_SITES[:3])
    with pytest.raises(CheckpointError, match="no weights for 1 cross-attention layers.*mid_block"):
        apply_wplus_adapter_to_unet(unet, missing)
    moved = WPlusSite(4, TINY_SITES[1].diffusers_name, ("output", 3, 0), 32)
    shifted = WPlusAdapter(32, sites=(TINY_SITES[0], moved, *TINY_SITES[2:]))
    with pytest.raises(
        CheckpointError,
        match="site 4 is up_blocks.1.attentions.0.*processor 4 of this UNet is "
        "up_blocks.1.attentions.1.transformer_blocks.0.attn1",
    ):
        apply_wplus_adapter_to_unet(unet, shifted)
    sd15_names = WPlusAdapter(32, sites=tuple(SD15_WPLUS_SITES[i] for i in (0,)) + TINY_SITES[1:])
    with pytest.raises(CheckpointError, match="has width 32 but W\\+ adapter site 1 expects 320"):
        apply_wplus_adapter_to_unet(unet, sd15_names)
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in unet.attn_processors.values())


def test_processors_own_their_weights_so_the_unet_dtype_never_reaches_the_adapter(tiny):
    unet, adapter, x = tiny
    from likeness.models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet, remove_wplus_adapter

    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    installed = apply_wplus_adapter_to_unet(unet, adapter, scale=1.0)
    try:
        adapter_ptrs = {p.data_ptr() for p in adapter.parameters()}
        assert not any(p.data_ptr() in adapter_ptrs for proc in installed.values() for p in proc.parameters())
        unet.to(torch.float16)
        assert all(p.dtype == torch.float16 for proc in installed.values() for p in proc.parameters())
        assert all(v.dtype == torch.float32 for v in adapter.state_dict().values())
        for key, value in adapter.state_dict().items():
            assert torch.equal(value, before[key]), key
    finally:
        assert remove_wplus_adapter(unet) == 4
        unet.to(torch.float32)
    assert all(torch.equal(v, before[k]) for k, v in adapter.state_dict().items())
    again = apply_wplus_adapter_to_unet(unet, adapter, scale=1.0)  # the adapter is still usable as it was
    try:
        assert all(p.dtype == torch.float32 for proc in again.values() for p in proc.parameters())
    finally:
        remove_wplus_adapter(unet)
