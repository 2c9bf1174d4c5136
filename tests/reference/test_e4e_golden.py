"""e4e encoder parity with golden/e4e_encoder_synth and the official-layout checkpoint loader.

Weights: ../shared/reference/synth.py (manifests/e4e_ffhq_encode.json, seed 0),
regenerated once per module (about 10 s for the 793 tensors). Tolerances
(golden/README.md): W+ and channel statistics 1e-5, tap.c3 5e-5 (max abs, fp32 CPU).
"""

from __future__ import annotations

import pytest
import torch

from likeness.models.e4e import Encoder4Editing
from likeness.models.e4e_fused import fuse_e4e
from likeness.models.inversion.e4e_model import default_e4e_opts, e4e_from_checkpoint, load_e4e
from likeness.models.stylegan2 import Generator

ENC = "state_dict.encoder."
DEC = "state_dict.decoder."
GOLDEN = "golden/e4e_encoder_synth.safetensors"


@pytest.fixture(scope="module")
def full_sd(synth, reference_dir):
    """All 793 tensors of the official layout (encoder + decoder + latent_avg), seed 0."""
    return synth.synth_state_dict(synth.load_manifest(str(reference_dir / "manifests/e4e_ffhq_encode.json")), 0)


@pytest.fixture(scope="module")
def golden(read_golden):
    return read_golden(GOLDEN)


@pytest.fixture(scope="module")
def encoder(full_sd):
    with torch.device("meta"):
        enc = Encoder4Editing()
    enc.load_state_dict({k[len(ENC) :]: v for k, v in full_sd.items() if k.startswith(ENC)}, strict=True, assign=True)
    return enc.eval().requires_grad_(False)


def test_synth_weights_match_the_golden_fingerprint(synth, full_sd, golden):
    sub = {k: v for k, v in full_sd.items() if k.startswith(ENC) or k == "latent_avg"}
    assert len(sub) == 622
    assert synth.fingerprint(sub) == golden[1]["weights_fingerprint"]
    assert torch.equal(full_sd["latent_avg"], golden[0]["in.latent_avg"])


def test_encoder_wplus_parity(encoder, full_sd, golden):
    g = golden[0]
    with torch.no_grad():
        w = encoder(g["in.images"])
    assert w.shape == (2, 18, 512) and w.dtype == torch.float32
    err = (w - g["out.wplus_no_avg"]).abs().max().item()
    assert err <= 1e-5, f"wplus_no_avg max abs diff {err:.3g}"
    wabs = w + full_sd["latent_avg"].unsqueeze(0)
    err_abs = (wabs - g["out.wplus"]).abs().max().item()
    assert err_abs <= 1e-5, f"wplus max abs diff {err_abs:.3g}"
    # the two images give clearly different codes (guards against a constant output)
    assert (w[0] - w[1]).abs().max().item() > 0.1


def test_encoder_taps(encoder, golden):
    g = golden[0]
    with torch.no_grad():
        f = encoder.features(g["in.images"])
    err_c3 = (f["c3"] - g["tap.c3"]).abs().max().item()
    assert err_c3 <= 5e-5, f"tap.c3 max abs diff {err_c3:.3g}"
    for name in ("input_layer", "c1", "c2", "c3", "p2", "p1"):
        mean = f[name].mean(dim=(2, 3))
        std = f[name].std(dim=(2, 3), correction=0)
        assert (mean - g[f"tap.{name}_chan_mean"]).abs().max().item() <= 1e-5, name
        assert (std - g[f"tap.{name}_chan_std"]).abs().max().item() <= 1e-5, name
    body_mean = torch.stack([u.mean(dim=(1, 2, 3)) for u in f["body"]])
    body_std = torch.stack([u.flatten(1).std(dim=1, correction=0) for u in f["body"]])
    assert (body_mean - g["tap.body_mean"]).abs().max().item() <= 1e-5
    assert (body_std - g["tap.body_std"]).abs().max().item() <= 1e-5


def test_encoder_bf16_autocast_is_close(encoder, golden):
    g = golden[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        w = encoder(g["in.images"][1:])
    ref = g["out.wplus_no_avg"][1:]
    err = (w.float() - ref).abs().max().item()
    # bf16 has an 8-bit mantissa; observed about 1e-2 on values up to 1.05
    assert err <= 0.05, f"bf16 autocast max abs diff {err:.3g}"
    cos = torch.nn.functional.cosine_similarity(w.float().flatten(), ref.flatten(), dim=0).item()
    assert cos >= 0.999


def test_fused_encoder_matches_the_golden(encoder, golden):
    """The inference form load_e4e builds (BatchNorms folded, heads stacked), fp32 and channels-last."""
    g = golden[0]
    fused = fuse_e4e(encoder).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        w = fused(g["in.images"].contiguous(memory_format=torch.channels_last))
        ref = encoder(g["in.images"])
    assert w.shape == (2, 18, 512) and w.dtype == torch.float32
    assert (w - g["out.wplus_no_avg"]).abs().max().item() <= 1e-5
    assert (w - ref).abs().max().item() <= 1e-5
    # bf16 weights and activations (Load e4e precision bf16/auto on a CPU with native bf16): its own parity figure
    low = fused.to(torch.bfloat16)
    with torch.inference_mode():
        wb = low(g["in.images"][1:].to(torch.bfloat16)).float()
    err = (wb - g["out.wplus_no_avg"][1:]).abs().max().item()
    assert err <= 0.05, f"bf16 fused max abs diff {err:.3g}"
    cos = torch.nn.functional.cosine_similarity(wb.flatten(), g["out.wplus_no_avg"][1:].flatten(), dim=0).item()
    assert cos >= 0.999


@pytest.fixture(scope="module")
def official_file(full_sd, tmp_path_factory):
    """A synthetic e4e_ffhq_encode.pt in the official layout, written with torch.save."""
    ckpt = {
        "state_dict": {k[len("state_dict.") :]: v for k, v in full_sd.items() if k.startswith("state_dict.")},
        "latent_avg": full_sd["latent_avg"],
        "opts": default_e4e_opts(),
    }
    assert len(ckpt["state_dict"]) == 792
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    torch.save(ckpt, path)
    return path


def test_official_layout_file_loads_and_inverts(official_file, full_sd, golden):
    inv = load_e4e(official_file)
    assert inv.opts["encoder_type"] == "Encoder4Editing"
    assert inv.has_decoder and not inv.decoder_loaded
    assert torch.equal(inv.latent_avg, full_sd["latent_avg"])
    g = golden[0]
    w = inv.encode(g["in.images"][1:])
    err = (w - g["out.wplus"][1:]).abs().max().item()
    assert err <= 1e-5, f"encode (loaded file) max abs diff {err:.3g}"

    # the decoder part is a rosinality Generator(1024), loaded strictly on first use
    gen = inv.decoder()
    assert isinstance(gen, Generator) and gen.n_latent == 18 and inv.decoder_loaded
    dec = {k[len(DEC) :]: v for k, v in full_sd.items() if k.startswith(DEC)}
    got = gen.state_dict()
    assert set(got) == set(dec) and len(dec) == 171
    for key in ("style.1.weight", "convs.15.conv.weight", "to_rgbs.7.upsample.kernel", "noises.noise_16"):
        assert torch.equal(got[key], dec[key]), key


@pytest.mark.parametrize("shape", [(512,), (18, 512), (1, 18, 512)])
def test_latent_avg_shapes_accepted(full_sd, shape):
    row = full_sd["latent_avg"][3]
    latent = row if shape == (512,) else full_sd["latent_avg"].reshape(shape)
    ckpt = {
        "state_dict": {k[len("state_dict.") :]: v for k, v in full_sd.items() if k.startswith("state_dict.")},
        "latent_avg": latent,
        "opts": default_e4e_opts(),
    }
    inv = e4e_from_checkpoint(ckpt, source=f"latent_avg{list(shape)}")
    assert inv.latent_avg.shape == (18, 512)
    expected = row.expand(18, 512) if shape == (512,) else full_sd["latent_avg"]
    assert torch.equal(inv.latent_avg, expected)
