"""StyleGAN2 generator parity with golden/stylegan2_256_synth, and real W+ codes through a 1024 model.

Weights: ../shared/reference/synth.py (seed 0). Tolerances (golden/README.md, max
abs, fp32 CPU): images and tap.skip* 1e-4, w_from_z and tap.style.* 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from likeness.models.files.checkpoints import load_file
from likeness.models.stylegan2 import Generator

GOLDEN = "golden/stylegan2_256_synth.safetensors"
STYLE_LAYERS = ["conv1"] + [f"convs.{i}" for i in range(12)] + ["to_rgb1"] + [f"to_rgbs.{i}" for i in range(6)]


def _generator(synth, manifest_path, size: int) -> tuple[Generator, dict[str, torch.Tensor]]:
    raw = synth.synth_state_dict(synth.load_manifest(str(manifest_path)), 0)
    sd = {k[len("g_ema.") :]: v for k, v in raw.items()}
    with torch.device("meta"):
        g = Generator(size)
    g.load_state_dict(sd, strict=True, assign=True)
    return g.eval().requires_grad_(False), raw


@pytest.fixture(scope="module")
def g256(synth, reference_dir):
    return _generator(synth, reference_dir / "manifests/stylegan2_256_synth.json", 256)


@pytest.fixture(scope="module")
def golden(read_golden):
    return read_golden(GOLDEN)


def test_weights_fingerprint(synth, g256, golden):
    assert synth.fingerprint(g256[1]) == golden[1]["weights_fingerprint"]
    assert g256[0].n_latent == 14 and g256[0].num_layers == 13


def test_image_parity(g256, golden):
    g, gold = g256[0], golden[0]
    with torch.no_grad():
        img = g(gold["in.wplus"])
        img_b2 = g(gold["in.wplus_b2"])
    assert img.shape == (1, 3, 256, 256)
    err = (img - gold["out.image"]).abs().max().item()
    err_b2 = (img_b2 - gold["out.image_b2"]).abs().max().item()
    assert err <= 1e-4, f"out.image max abs diff {err:.3g}"
    assert err_b2 <= 1e-4, f"out.image_b2 max abs diff {err_b2:.3g}"
    # row 1 of the batch differs from row 0 (each sample has its own modulated weights)
    assert (img_b2[0] - img_b2[1]).abs().max().item() > 0.1


def test_mapping_parity(g256, golden):
    g, gold = g256[0], golden[0]
    with torch.no_grad():
        w = g.mapping(gold["in.z"])
    err = (w - gold["out.w_from_z"]).abs().max().item()
    assert err <= 1e-5, f"out.w_from_z max abs diff {err:.3g}"


def test_skip_style_and_feature_taps(g256, golden):
    g, gold = g256[0], golden[0]
    wplus = gold["in.wplus"]
    feats = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: feats.append(out)) for m in [g.conv1, *g.convs]]
    try:
        with torch.no_grad():
            for res in (4, 8, 16, 32, 64, 128):
                skip = g(wplus, max_resolution=res)
                assert skip.shape == (1, 3, res, res)
                err = (skip - gold[f"tap.skip{res}"]).abs().max().item()
                assert err <= 1e-4, f"tap.skip{res} max abs diff {err:.3g}"
            feats.clear()
            g(wplus)
    finally:
        for h in hooks:
            h.remove()
    assert len(feats) == 13
    mean = torch.stack([f.mean() for f in feats])
    std = torch.stack([f.std(correction=0) for f in feats])
    assert torch.allclose(mean, gold["tap.feat_mean"], rtol=1e-5, atol=1e-5)
    assert torch.allclose(std, gold["tap.feat_std"], rtol=1e-5, atol=1e-5)
    # rows: conv1 <- 0, to_rgb1 <- 1, convs[2k] <- 2k+1, convs[2k+1] <- 2k+2, to_rgbs[k] <- 2k+3
    rows = {"conv1": 0, "to_rgb1": 1}
    rows.update({f"convs.{i}": i + 1 for i in range(12)})
    rows.update({f"to_rgbs.{k}": 2 * k + 3 for k in range(6)})
    with torch.no_grad():
        for name in STYLE_LAYERS:
            style = g.get_submodule(name).conv.modulation(wplus[:, rows[name]])
            err = (style - gold[f"tap.style.{name}"]).abs().max().item()
            assert err <= 1e-5, f"tap.style.{name} max abs diff {err:.3g}"


@pytest.fixture(scope="module")
def g1024(synth, reference_dir):
    return _generator(synth, reference_dir / "manifests/stylegan2_1024.json", 1024)[0]


@pytest.fixture(scope="module")
def real_latents(reference_dir):
    paths = sorted((reference_dir / "latents").rglob("*.pth"))
    assert len(paths) == 7, paths
    codes = [load_file(p) for p in paths]
    for p, c in zip(paths, codes, strict=True):
        assert c.shape == (1, 18, 512), p
    return torch.cat([c.float() for c in codes])


def test_real_wplus_codes_decode_at_1024(g1024, real_latents):
    """The 7 real e4e codes through Generator(1024) (synthetic weights): finite, batched = single.

    All 7 are run batched to 64 px (checks batching with real latents); one code is
    rendered at the full 1024 px (all 18 rows, all layers) to keep the test fast.
    """
    with torch.no_grad():
        small = g1024(real_latents, max_resolution=64)
        single = g1024(real_latents[4:5], max_resolution=64)
        full = g1024(real_latents[:1])
    assert small.shape == (7, 3, 64, 64) and torch.isfinite(small).all()
    assert (small[4:5] - single).abs().max().item() <= 1e-4
    assert full.shape == (1, 3, 1024, 1024) and full.dtype == torch.float32
    assert torch.isfinite(full).all()
    assert full.std().item() > 1e-2  # not a constant image
    assert full.abs().max().item() < 1e3  # no blow-up through the 1024 layers
