"""InstantID / PSTF-AttControl core: Resampler, triplet attention, processor on a reduced SDXL-shaped UNet, loader."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from likeness.models.errors import CheckpointError, MissingModelError
from likeness.models.files.checkpoints import flatten
from likeness.models.pstf.attention import triplet_attention
from likeness.models.pstf.model import (
    PSTFAdapter,
    build_pstf_checkpoint,
    load_pstf_adapter,
    pstf_checkpoint_shapes,
)
from likeness.models.pstf.processor import PSTFSiteLayer, TripletAttnProcessor
from likeness.models.pstf.resampler import Resampler
from likeness.models.pstf.sites import SDXL_SITES, site_table

CTX = 32
TINY_RESAMPLER = {"dim": 32, "depth": 2, "dim_head": 8, "heads": 4, "num_queries": 16, "ff_mult": 2}
TINY_TRANSFORMERS = (
    ("down_blocks.1.attentions.0", ("input", 4), 1, 32),
    ("down_blocks.1.attentions.1", ("input", 5), 1, 32),
    ("down_blocks.2.attentions.0", ("input", 7), 2, 64),
    ("down_blocks.2.attentions.1", ("input", 8), 2, 64),
    ("up_blocks.0.attentions.0", ("output", 0), 2, 64),
    ("up_blocks.0.attentions.1", ("output", 1), 2, 64),
    ("up_blocks.0.attentions.2", ("output", 2), 2, 64),
    ("up_blocks.1.attentions.0", ("output", 3), 1, 32),
    ("up_blocks.1.attentions.1", ("output", 4), 1, 32),
    ("up_blocks.1.attentions.2", ("output", 5), 1, 32),
    ("mid_block.attentions.0", ("middle", 0), 2, 64),
)
"""The reduced SDXL-shaped UNet below: SDXL's block structure, depths (1, 2) instead of (2, 10), 16-wide heads."""
TINY_SITES = site_table(TINY_TRANSFORMERS, head_dim=16)
TINY = {"cross_attention_dim": CTX, "sites": TINY_SITES, "resampler": TINY_RESAMPLER}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- Resampler and triplet attention ------------------------------------------------------------


def test_resampler_shapes_and_learned_null_tokens():
    torch.manual_seed(0)
    r = Resampler(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=512, output_dim=CTX)
    out = r(torch.randn(3, 1, 512, generator=_gen(1)))
    assert out.shape == (3, 16, CTX)
    null = r(torch.zeros(1, 1, 512))
    assert null.abs().max() > 0.1  # Resampler(0) is not zero: learned latents and biases
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match=r"\[B, L, 512\], got shape \(1, 1, 9216\)"):
        r(torch.zeros(1, 1, 9216))


def _streams(batch=2, n=6, c=16, seed=0):
    g = _gen(seed)
    q, h_t = torch.randn(batch, n, c, generator=g), torch.randn(batch, n, c, generator=g)
    kv = [(torch.randn(batch, 4, c, generator=g), torch.randn(batch, 4, c, generator=g)) for _ in range(2)]
    return q, h_t, kv


def _explicit(q, k, v, heads):
    b, n, c = q.shape
    d = c // heads
    qh, kh, vh = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    p = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (p @ vh).transpose(1, 2).reshape(b, n, c)


def test_triplet_attention_is_text_plus_scaled_streams_with_the_layer_query():
    q, h_t, ((k1, v1), (k2, v2)) = _streams()
    out = triplet_attention(h_t, q, [(k1, v1, 1.0), (k2, v2, 0.6)], heads=4)
    expected = h_t + _explicit(q, k1, v1, 4) + 0.6 * _explicit(q, k2, v2, 4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    id_only = triplet_attention(h_t, q, [(k1, v1, 1.0), (k2, v2, 0.0)], heads=4)
    torch.testing.assert_close(id_only, h_t + _explicit(q, k1, v1, 4), atol=1e-5, rtol=0)


def test_zero_scales_return_h_t_itself_without_work():
    q, h_t, ((k1, v1), (k2, v2)) = _streams()

    def never(*args):
        raise AssertionError("attention must not run at scale 0")

    assert triplet_attention(h_t, q, [(k1, v1, 0), (k2, v2, 0.0)], 4, attention_fn=never) is h_t
    assert triplet_attention(h_t, q, [], 4, attention_fn=never) is h_t


def test_tensor_scales_act_per_row_and_per_token():
    q, h_t, ((k1, v1), _) = _streams()
    per_row = triplet_attention(h_t, q, [(k1, v1, torch.tensor([0.0, 0.5]))], 4)
    assert torch.equal(per_row[0], h_t[0])
    torch.testing.assert_close(per_row[1], (h_t + 0.5 * _explicit(q, k1, v1, 4))[1], atol=1e-5, rtol=0)
    mask = torch.zeros(2, 6, 1)
    mask[:, :3] = 1.0
    masked = triplet_attention(h_t, q, [(k1, v1, mask)], 4)
    assert torch.equal(masked[:, 3:], h_t[:, 3:]) and not torch.allclose(masked[:, :3], h_t[:, :3])


def test_shared_token_sets_and_width_errors():
    q, h_t, ((k1, v1), _) = _streams()
    shared = triplet_attention(h_t, q, [(k1[:1], v1[:1], 1.0)], 4)
    tiled = triplet_attention(h_t, q, [(k1[:1].repeat(2, 1, 1), v1[:1].repeat(2, 1, 1), 1.0)], 4)
    torch.testing.assert_close(shared, tiled, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="width 8/8 but the layer width is 16"):
        triplet_attention(h_t, q, [(k1[..., :8], v1[..., :8], 1.0)], 4)
    with pytest.raises(ValueError, match="h_t and q must both be"):
        triplet_attention(h_t, q[:, :3], [], 4)


def test_site_layer_projects_each_stream_and_instantid_has_no_style():
    layer = PSTFSiteLayer(16, CTX)
    tokens = torch.randn(2, 16, CTX, generator=_gen(3))
    k, v = layer.project(tokens, "style")
    torch.testing.assert_close(k, tokens @ layer.to_k_style.weight.T)
    assert v.shape == (2, 16, 16)
    assert list(layer.state_dict()) == ["to_k_ip.weight", "to_v_ip.weight", "to_k_style.weight", "to_v_style.weight"]
    instantid = PSTFSiteLayer(16, CTX, style=False)
    assert list(instantid.state_dict()) == ["to_k_ip.weight", "to_v_ip.weight"]
    with pytest.raises(ValueError, match="no W\\+ \\(style\\) weights"):
        instantid.project(tokens, "style")
    with pytest.raises(ValueError, match=r"tokens must be \[B, T, 32\]"):
        layer.project(tokens[..., :8])


def test_sdxl_site_table_has_70_sites_with_middle_keyed_zero():
    assert len(SDXL_SITES) == 70 and [s.index for s in SDXL_SITES] == list(range(1, 140, 2))
    middle = [s for s in SDXL_SITES if s.comfy_key[0] == "middle"]
    assert [s.comfy_key for s in middle] == [("middle", 0, i) for i in range(10)]
    assert {s.hidden_size: s.heads for s in SDXL_SITES} == {640: 10, 1280: 20}
    assert len({s.comfy_key for s in SDXL_SITES}) == 70


# --- the processor on a reduced SDXL-shaped diffusers UNet --------------------------------------

diffusers = pytest.importorskip("diffusers")


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 2, 4),
        norm_num_groups=8,
        cross_attention_dim=CTX,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=CTX + 6 * 8,
    )
    return unet.eval()


def _unet_inputs(batch=2):
    g = _gen(5)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.tensor(500.0),
        "text": torch.randn(batch, 77, CTX, generator=g),
        "added_cond_kwargs": {"text_embeds": torch.randn(batch, CTX, generator=g), "time_ids": torch.rand(batch, 6)},
    }


@pytest.fixture(scope="module")
def tiny():
    unet = _tiny_unet()
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert names == [s.diffusers_name for s in TINY_SITES], "the reduced table must follow diffusers' order"
    with torch.device("meta"):
        adapter = PSTFAdapter(style=True, **TINY)
    ckpt = build_pstf_checkpoint(7, shapes=pstf_checkpoint_shapes(True, **TINY))
    adapter.load_state_dict(flatten(ckpt), strict=True, assign=True)
    return unet, adapter.eval()


def _forward(unet, ctx, inputs):
    with torch.no_grad():
        return unet(inputs["sample"], inputs["timestep"], ctx, added_cond_kwargs=inputs["added_cond_kwargs"]).sample


def test_processors_on_every_site_are_each_called_once_per_forward(tiny, monkeypatch):
    from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet, encode_context, remove_pstf

    unet, adapter = tiny
    inputs = _unet_inputs()
    base = _forward(unet, inputs["text"], inputs)
    procs = apply_pstf_to_unet(unet, adapter, scale=1.0, scale_style=0.6)
    try:
        assert sorted(procs) == [s.index for s in TINY_SITES]
        calls = []
        original = TripletAttnProcessor.__call__

        def spy(self, attn, *args, **kwargs):
            calls.append(id(self))
            return original(self, attn, *args, **kwargs)

        monkeypatch.setattr(TripletAttnProcessor, "__call__", spy)
        with torch.no_grad():
            ids = adapter.id_tokens(torch.randn(2, 512, generator=_gen(1)))
            ws = adapter.wplus_tokens(torch.randn(2, 18, 512, generator=_gen(2)))
        out = _forward(unet, encode_context(inputs["text"], ids, ws), inputs)
        assert sorted(calls) == sorted(id(p) for p in procs.values())  # every site exactly once
        assert (out - base).abs().max() > 1e-3
    finally:
        assert remove_pstf(unet) == len(TINY_SITES)
    assert torch.equal(_forward(unet, inputs["text"], inputs), base)


def test_zero_scales_equal_the_stock_unet_bit_for_bit(tiny):
    from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet, encode_context, remove_pstf, set_pstf_scale

    unet, adapter = tiny
    inputs = _unet_inputs()
    base = _forward(unet, inputs["text"], inputs)
    apply_pstf_to_unet(unet, adapter)
    try:
        assert set_pstf_scale(unet, 0.0, 0.0) == len(TINY_SITES)
        with torch.no_grad():
            ctx = encode_context(inputs["text"], adapter.uncond_id_tokens(), adapter.uncond_wplus_tokens())
        assert ctx.shape == (2, 77 + 32, CTX)
        assert torch.equal(_forward(unet, ctx, inputs), base)
        set_pstf_scale(unet, scale_style=0.5)
        assert not torch.equal(_forward(unet, ctx, inputs), base)  # uncond W+ tokens are not neutral
    finally:
        remove_pstf(unet)


def test_instantid_file_runs_with_the_identity_stream_only(tiny):
    from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet, encode_context, remove_pstf

    unet, _ = tiny
    with torch.device("meta"):
        adapter = PSTFAdapter(style=False, **TINY)
    adapter.load_state_dict(
        flatten(build_pstf_checkpoint(3, False, shapes=pstf_checkpoint_shapes(False, **TINY))), assign=True
    )
    inputs = _unet_inputs()
    base = _forward(unet, inputs["text"], inputs)
    apply_pstf_to_unet(unet, adapter, scale=0.8)
    try:
        with torch.no_grad():
            ctx = encode_context(inputs["text"], adapter.id_tokens(torch.randn(1, 512, generator=_gen(4))))
        assert ctx.shape == (2, 77 + 16, CTX)
        assert (_forward(unet, ctx, inputs) - base).abs().max() > 1e-3
        with pytest.raises(CheckpointError, match="InstantID \\(identity stream only\\)"):
            adapter.wplus_tokens(torch.zeros(1, 18, 512))
    finally:
        remove_pstf(unet)


def test_processor_rejects_self_attention_and_short_contexts():
    proc = TripletAttnProcessor(16, CTX, num_tokens=16)
    with pytest.raises(ValueError, match="must be \\[text \\| 32 image tokens\\]"):
        proc.split_context(torch.zeros(1, 30, CTX))
    text, ids, ws = TripletAttnProcessor(16, CTX, style=False).split_context(torch.zeros(1, 77 + 16, CTX))
    assert text.shape[1] == 77 and ids.shape[1] == 16 and ws is None
    with pytest.raises(ValueError, match="attn2\\) only"):
        proc(None, torch.zeros(1, 4, 16))


def test_unet_of_another_layout_is_refused_before_installing(tiny):
    from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet

    unet, _ = tiny
    with torch.device("meta"):
        sdxl = PSTFAdapter(style=False, cross_attention_dim=CTX, resampler=TINY_RESAMPLER)
    with pytest.raises(
        CheckpointError,
        match="attentions.0.transformer_blocks.0.attn2.processor has width 32 but InstantID site 1 expects 640",
    ):
        apply_pstf_to_unet(unet, sdxl)
    fewer = PSTFAdapter(style=False, cross_attention_dim=CTX, sites=TINY_SITES[:-1], resampler=TINY_RESAMPLER)
    with pytest.raises(
        CheckpointError, match="no weights for 1 cross-attention layers of this UNet \\(first: mid_block"
    ):
        apply_pstf_to_unet(unet, fewer)
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in unet.attn_processors.values())


# --- loader -------------------------------------------------------------------------------------


def _tiny_file(tmp_path, name="pytorch_model.bin", style=True, dtype=torch.float32, seed=1):
    ckpt = build_pstf_checkpoint(seed, style, dtype, shapes=pstf_checkpoint_shapes(style, **TINY))
    path = tmp_path / name
    torch.save(ckpt, path)
    return path, ckpt


def test_built_checkpoints_have_the_official_layouts_and_are_deterministic():
    pstf, instantid = pstf_checkpoint_shapes(True), pstf_checkpoint_shapes(False)
    assert len(pstf) == 382 and len(instantid) == 191
    assert all(k in pstf for k in instantid)
    a = flatten(build_pstf_checkpoint(2, shapes=pstf_checkpoint_shapes(True, **TINY)))
    b = flatten(build_pstf_checkpoint(2, shapes=pstf_checkpoint_shapes(True, **TINY)))
    assert list(a) == list(pstf_checkpoint_shapes(True, **TINY)) and all(torch.equal(a[k], b[k]) for k in a)
    assert a["image_proj.norm_out.weight"].min() > 0.85 and a["image_proj.proj_in.bias"].abs().max() > 0


def test_pstf_bin_loads_strictly_with_both_streams(tmp_path):
    path, ckpt = _tiny_file(tmp_path)
    adapter = load_pstf_adapter(path, **TINY)
    assert adapter.has_style and adapter.kind == "PSTF-AttControl" and adapter.dtype == torch.float32
    assert torch.equal(
        adapter.layer(TINY_SITES[-1]).to_v_style.weight, ckpt["ip_adapter"][f"{TINY_SITES[-1].index}.to_v_style.weight"]
    )
    assert adapter.site_for_comfy_key(("middle", 0, 1)).index == TINY_SITES[-1].index
    null = adapter.uncond_id_tokens(2)
    assert null.shape == (2, 16, CTX) and torch.equal(null[0], null[1])
    with torch.no_grad():
        torch.testing.assert_close(null[:1], adapter.image_proj(torch.zeros(1, 1, 512)))
        torch.testing.assert_close(adapter.uncond_wplus_tokens(1), adapter.image_style_proj(torch.zeros(1, 1, 9216)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_instantid_safetensors_in_half_precision_is_accepted(tmp_path, dtype):
    ckpt = build_pstf_checkpoint(4, False, dtype, shapes=pstf_checkpoint_shapes(False, **TINY))
    path = tmp_path / "ip-adapter.safetensors"
    save_file({k: v.contiguous() for k, v in flatten(ckpt).items()}, str(path))
    adapter = load_pstf_adapter(path, **TINY)
    assert not adapter.has_style and adapter.kind == "InstantID" and adapter.dtype == dtype
    assert adapter.id_tokens(torch.randn(512)).dtype == dtype


def test_training_state_prefixes_are_accepted(tmp_path):
    ckpt = build_pstf_checkpoint(5, False, shapes=pstf_checkpoint_shapes(False, **TINY))
    flat = {
        ("image_proj_model." + k[len("image_proj.") :]) if k.startswith("image_proj.") else k: v
        for k, v in flatten(ckpt).items()
    }
    flat = {
        ("adapter_modules." + k[len("ip_adapter.") :]) if k.startswith("ip_adapter.") else k: v for k, v in flat.items()
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(flat, path)
    assert not load_pstf_adapter(path, **TINY).has_style


def test_the_official_sdxl_layout_is_what_the_default_loader_expects(tmp_path):
    path, _ = _tiny_file(tmp_path)
    with pytest.raises(CheckpointError, match="IP-Adapter-style file for \\(context width 32\\).*SDXL only"):
        load_pstf_adapter(path)
    wide = {k: v for k, v in TINY.items() if k != "cross_attention_dim"}
    with pytest.raises(CheckpointError, match="not a PSTF-AttControl \\(SDXL\\) checkpoint.*shape mismatches"):
        load_pstf_adapter(path, cross_attention_dim=CTX, **{**wide, "resampler": {**TINY_RESAMPLER, "dim": 48}})


def test_wrong_files_are_named(tmp_path):
    cases = {
        "wplus.bin": (
            {"w_proj": {"norm.weight": torch.ones(768)}, "wplus_adapter": {}},
            "SD1.5 W\\+ adapter.*Load W\\+",
        ),
        "faceid.bin": (
            {
                "image_proj": {"proj.0.weight": torch.ones(4, 512)},
                "ip_adapter": {"1.to_q_lora.down.weight": torch.ones(2, 2)},
            },
            "IP-Adapter FaceID",
        ),
        "plus.bin": (
            {"image_proj": {"proj_in.weight": torch.ones(1280, 1280)}, "ip_adapter": {}},
            "IP-Adapter Plus.*1280",
        ),
        "clip.bin": ({"image_proj": {"proj.weight": torch.ones(4, 4)}}, "CLIP image encoder"),
        "cnet.safetensors": (
            {"controlnet_cond_embedding.conv_in.weight": torch.ones(16, 3, 3, 3)},
            "ControlNet.*models/controlnet",
        ),
        "ldm_cnet.bin": ({"control_model.input_hint_block.0.weight": torch.ones(2)}, "ControlNet"),
        "ckpt.safetensors": ({"model.diffusion_model.out.2.weight": torch.ones(2)}, "Stable Diffusion checkpoint"),
        "sd15.bin": (
            {
                "image_proj": {"latents": torch.ones(1, 16, 768)},
                "ip_adapter": {"1.to_k_ip.weight": torch.ones(320, 768)},
            },
            "SD1.5 \\(context width 768\\)",
        ),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file(content, str(path))
        else:
            torch.save(content, path)
        with pytest.raises(CheckpointError, match=pattern):
            load_pstf_adapter(path)


def test_truncated_missing_and_damaged_files(tmp_path):
    path, ckpt = _tiny_file(tmp_path)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pstf_adapter(truncated, **TINY)
    with pytest.raises(MissingModelError):
        load_pstf_adapter(tmp_path / "absent.bin")
    del ckpt["ip_adapter"][f"{TINY_SITES[0].index}.to_k_style.weight"]
    partial = tmp_path / "partial.bin"
    torch.save(ckpt, partial)
    with pytest.raises(CheckpointError, match="1 missing keys, first: ip_adapter.1.to_k_style.weight"):
        load_pstf_adapter(partial, **TINY)
    _, ckpt = _tiny_file(tmp_path, "nan.bin")
    ckpt["image_proj"]["proj_in.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.bin")
    with pytest.raises(CheckpointError, match="image_proj.proj_in.weight contains NaN"):
        load_pstf_adapter(tmp_path / "nan.bin", **TINY)
    torch.save(torch.zeros(3), tmp_path / "tensor.bin")
    with pytest.raises(CheckpointError, match="holds a Tensor, not an InstantID/PSTF state dict"):
        load_pstf_adapter(tmp_path / "tensor.bin", **TINY)


def test_context_check_points_sd15_users_to_the_wplus_nodes():
    with torch.device("meta"):
        adapter = PSTFAdapter(style=False)
    with pytest.raises(CheckpointError, match="context width 768.*W\\+ adapter nodes"):
        adapter.check_context_dim(768)
    adapter.check_context_dim(2048)
