"""InstantID / PSTF-AttControl parity with the official classes (golden/) and checkpoint layouts (manifests/).

Tolerances: Resampler and processor outputs max |diff| <= 1e-5 (fp32 CPU; golden/README.md);
``draw_kps`` exact (uint8, compared with OpenCV 5.0's output).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from likeness.models.pstf.kps import draw_kps
from likeness.models.pstf.model import load_pstf_adapter, pstf_checkpoint_shapes
from likeness.models.pstf.processor import TripletAttnProcessor
from likeness.models.pstf.resampler import Resampler
from likeness.models.pstf.sites import SDXL_SITES

TOL = 1e-5


def _prefixed(data: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}


def test_wplus_resampler_matches_official(read_golden):
    data, _ = read_golden("golden/resampler_wplus_small.safetensors")
    model = Resampler(
        dim=64, depth=2, dim_head=16, heads=4, num_queries=4, embedding_dim=9216, output_dim=32, ff_mult=4
    )
    model.load_state_dict(_prefixed(data, "param."), strict=True)
    with torch.no_grad():
        tokens = model(data["in.x"])
    assert tokens.shape == (2, 4, 32)
    assert (tokens - data["out.tokens"]).abs().max().item() <= TOL
    assert data["in.x"][0].abs().max() == 0 and tokens[0].abs().max() > 0.1  # row 0 = CFG uncond: learned tokens


@pytest.mark.parametrize(
    ("key", "scale", "scale_style"),
    [("out.hidden_states", 1.0, 0.6), ("out.id_only", 1.0, 0.0), ("out.text_only", 0.0, 0.0)],
)
def test_triplet_processor_matches_official(read_golden, key, scale, scale_style):
    from diffusers.models.attention_processor import Attention

    data, meta = read_golden("golden/pstf_triplet_attn_small.safetensors")
    assert (float(meta["scale"]), float(meta["scale_style"]), int(meta["num_tokens"])) == (1.0, 0.6, 4)
    attn = Attention(query_dim=64, cross_attention_dim=32, heads=4, dim_head=16, bias=False, out_bias=True)
    attn.load_state_dict(_prefixed(data, "attn."), strict=True)
    proc = TripletAttnProcessor(
        hidden_size=64, cross_attention_dim=32, scale=scale, scale_style=scale_style, num_tokens=4
    )
    proc.load_state_dict(_prefixed(data, "proc."), strict=True)
    attn.set_processor(proc)
    with torch.no_grad():
        out = attn(data["in.hidden_states"], encoder_hidden_states=data["in.encoder_hidden_states"])
    assert out.shape == data[key].shape == (2, 24, 64)
    assert (out - data[key]).abs().max().item() <= TOL
    # the three reference outputs differ clearly, so each comparison can fail
    assert (data["out.hidden_states"] - data["out.id_only"]).abs().max() > 1e-3
    assert (data["out.id_only"] - data["out.text_only"]).abs().max() > 1e-3


def test_draw_kps_is_identical_to_instantid(read_golden):
    data, _ = read_golden("golden/instantid_draw_kps.safetensors")
    cases = sorted({k.split(".")[1] for k in data if k.startswith("in.")})
    assert cases == ["astronaut_512", "tilted_640", "wide_1024x768"]
    for case in cases:
        size = tuple(int(v) for v in data[f"in.{case}.size_wh"])
        image = draw_kps(size, data[f"in.{case}.kps"].numpy())
        expected = data[f"out.{case}.image"].numpy()
        assert image.shape == expected.shape == (size[1], size[0], 3) and image.dtype == np.uint8
        assert np.array_equal(image, expected), f"{case}: {(image != expected).any(axis=2).sum()} pixels differ"


def test_site_table_matches_reference_index(reference_dir):
    index = json.loads((reference_dir / "manifests" / "diffusers_attn_index_sdxl.json").read_text())
    table = {str(s.index): {"diffusers": s.diffusers_name, "ldm": list(s.comfy_key)} for s in SDXL_SITES}
    assert table == index and len(table) == 70


@pytest.mark.parametrize(
    ("manifest", "style", "counts"),
    [
        (
            "pstf_attcontrol_sdxl.json",
            True,
            {"image_proj": 81_978_624, "image_style_proj": 93_119_744, "ip_adapter": 681_574_400},
        ),
        ("instantid_ip_adapter_sdxl.json", False, {"image_proj": 81_978_624, "ip_adapter": 340_787_200}),
    ],
)
def test_expected_shapes_match_manifests(reference_dir, manifest, style, counts):
    expected = json.loads((reference_dir / "manifests" / manifest).read_text())
    shapes = pstf_checkpoint_shapes(style)
    assert list(shapes) == list(expected)  # same keys in the same order
    assert shapes == {k: tuple(v) for k, v in expected.items()}
    totals: dict[str, int] = {}
    for key, shape in shapes.items():
        totals[key.split(".", 1)[0]] = totals.get(key.split(".", 1)[0], 0) + int(np.prod(shape))
    assert totals == counts


def test_full_size_instantid_file_from_the_manifest_loads_strictly(reference_dir, synth, tmp_path):
    """The official ip-adapter.bin layout (191 tensors, 0.42 G values; stored fp16 here to halve the memory)."""
    manifest = synth.load_manifest(str(reference_dir / "manifests" / "instantid_ip_adapter_sdxl.json"))
    nested: dict[str, dict[str, torch.Tensor]] = {}
    for key, shape in manifest.items():
        top, sub = key.split(".", 1)
        nested.setdefault(top, {})[sub] = synth.synth_tensor(key, shape, 0).half()
    path = tmp_path / "ip-adapter.bin"
    torch.save(nested, path)
    probe = {k: nested["ip_adapter"][k] for k in ("1.to_k_ip.weight", "139.to_v_ip.weight")}
    del nested
    adapter = load_pstf_adapter(path)
    assert adapter.kind == "InstantID" and adapter.dtype == torch.float16 and len(adapter.sites) == 70
    assert torch.equal(adapter.layer(1).to_k_ip.weight, probe["1.to_k_ip.weight"])
    assert torch.equal(adapter.layer(139).to_v_ip.weight, probe["139.to_v_ip.weight"])
    assert adapter.site_for_comfy_key(("middle", 0, 9)).index == 139
    with torch.no_grad():
        cond = adapter.id_tokens(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)) * 20)
        null = adapter.uncond_id_tokens(1)
    assert cond.shape == null.shape == (1, 16, 2048) and torch.isfinite(cond.float()).all()
    assert (cond.float() - null.float()).abs().max() > 1e-2
