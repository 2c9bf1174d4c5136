"""W+ adapter parity with the official classes (golden/) and checkpoint compatibility (manifests/).

Tolerances: golden outputs max |diff| <= 1e-5 (fp32 CPU; golden/README.md).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file as load_safetensors

from likeness.models.errors import CheckpointError
from likeness.models.wplus_adapter.model import WPlusAttnProcessor, WProjModel, load_wplus_adapter, wplus_adapter_shapes
from likeness.models.wplus_adapter.sites import SD15_WPLUS_SITES

TOL = 1e-5


def _prefixed(data: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}


def _nest(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        top, sub = key.split(".", 1)
        out.setdefault(top, {})[sub] = value
    return out


def test_wproj_matches_official(reference_dir):
    data = load_safetensors(str(reference_dir / "golden" / "wplus_wproj_small.safetensors"))
    model = WProjModel(cross_attention_dim=64, embeddings_dim=512, clip_extra_context_tokens=4)
    model.load_state_dict(_prefixed(data, "param."), strict=True)
    with torch.no_grad():
        tokens = model(data["in.w_plus"])
        uncond = model(torch.zeros_like(data["in.w_plus"]))
    assert tokens.shape == (1, 4, 64)
    assert (tokens - data["out.tokens"]).abs().max().item() <= TOL
    assert (uncond - data["out.tokens_uncond_zeros"]).abs().max().item() <= TOL
    assert torch.allclose(uncond[0], data["param.norm.bias"].expand(4, 64), atol=TOL, rtol=0)


@pytest.mark.parametrize("scale", [0.7, 0.0])
def test_residual_attention_matches_official(reference_dir, scale):
    from diffusers.models.attention_processor import Attention

    data = load_safetensors(str(reference_dir / "golden" / "wplus_residual_attn_small.safetensors"))
    torch.manual_seed(0)
    attn = Attention(query_dim=64, cross_attention_dim=32, heads=4, dim_head=16, bias=False, out_bias=True)
    attn.load_state_dict(_prefixed(data, "attn."), strict=True)
    proc = WPlusAttnProcessor(hidden_size=64, cross_attention_dim=32, scale=1.0, num_tokens=4)
    proc.load_state_dict(_prefixed(data, "proc."), strict=True)
    proc.scale = scale
    attn.set_processor(proc)
    attn.eval()
    with torch.no_grad():
        out = attn(data["in.hidden_states"], encoder_hidden_states=data["in.encoder_hidden_states"])
    expected = data[f"out.scale_{scale}"]
    assert out.shape == expected.shape == (2, 16, 64)
    assert (out - expected).abs().max().item() <= TOL
    if scale:
        # the W+ branch matters: the two reference outputs differ clearly
        assert (data["out.scale_0.7"] - data["out.scale_0.0"]).abs().max().item() > 1e-3


def test_site_table_matches_reference_index(reference_dir):
    index = json.loads((reference_dir / "manifests" / "diffusers_attn_index_sd15.json").read_text())
    table = {str(s.index): {"diffusers": s.diffusers_name, "ldm": list(s.comfy_key)} for s in SD15_WPLUS_SITES}
    assert table == index
    assert [s.index for s in SD15_WPLUS_SITES] == list(range(1, 32, 2))


def test_expected_shapes_match_manifest(reference_dir):
    manifest = json.loads((reference_dir / "manifests" / "wplus_adapter_sd15.json").read_text())
    shapes = wplus_adapter_shapes()
    assert {k: tuple(v) for k, v in manifest.items()} == shapes
    assert sum(torch.Size(v).numel() for k, v in shapes.items() if k.startswith("w_proj.")) == 7_079_424
    assert sum(torch.Size(v).numel() for k, v in shapes.items() if k.startswith("wplus_adapter.")) == 31_559_680


def test_synthetic_official_file_loads_strictly(reference_dir, synth, tmp_path):
    flat = synth.synth_state_dict(synth.load_manifest(str(reference_dir / "manifests" / "wplus_adapter_sd15.json")), 0)
    path = tmp_path / "wplus_adapter.bin"
    torch.save(_nest(flat), path)
    adapter = load_wplus_adapter(path)
    state = adapter.state_dict()
    assert set(state) == set(flat)
    assert all(torch.equal(state[k], flat[k]) for k in flat)
    assert adapter.dtype == torch.float32 and adapter.cross_attention_dim == 768 and len(adapter.sites) == 16
    w = torch.randn(2, 18, 512, generator=torch.Generator().manual_seed(1))
    assert adapter.tokens(w).shape == (2, 4, 768)
    assert torch.equal(adapter.uncond_tokens(3), flat["w_proj.norm.bias"].expand(3, 4, 768))


def test_sdxl_width_variant_is_refused_naming_sdxl(reference_dir, synth, tmp_path):
    manifest = synth.load_manifest(str(reference_dir / "manifests" / "wplus_adapter_sd15.json"))
    sdxl = {}
    for key, shape in manifest.items():
        shape = list(shape)
        if key.startswith("w_proj."):
            shape[0] = 2048
        elif key.endswith(("to_k_wplus.weight", "to_v_wplus.weight")):
            shape[1] = 2048
        sdxl[key] = shape
    path = tmp_path / "wplus_sdxl.bin"
    torch.save(_nest(synth.synth_state_dict(sdxl, 0)), path)
    with pytest.raises(CheckpointError, match=r"SDXL \(context width 2048\).*SD1\.5"):
        load_wplus_adapter(path)


def test_e4e_checkpoint_is_refused_and_identified(reference_dir, synth, tmp_path):
    manifest = synth.load_manifest(str(reference_dir / "manifests" / "e4e_ffhq_encode.json"))
    small = {k: v for k, v in manifest.items() if k.startswith("state_dict.encoder.styles.0.")}
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save(_nest(synth.synth_state_dict(small, 0)), path)
    with pytest.raises(CheckpointError, match="not a W\\+ adapter.*e4e/pSp encoder"):
        load_wplus_adapter(path)
