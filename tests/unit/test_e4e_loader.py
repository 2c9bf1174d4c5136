"""e4e checkpoint loader: refusal messages, latent_avg shapes, opts, lazy decoder. No reference data."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from likeness.models.errors import CheckpointError
from likeness.models.inversion.e4e_model import (
    E4EInverter,
    build_e4e_checkpoint,
    default_e4e_opts,
    e4e_from_checkpoint,
    expected_e4e_shapes,
    load_e4e,
    normalize_latent_avg,
)


def _zeros_checkpoint(decoder: bool = True) -> dict:
    """Official layout with all-zero weights, each a stride-0 view of one element (no 1.2 GB allocation)."""
    state = {}
    for key, shape in expected_e4e_shapes(decoder=decoder).items():
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key[len("state_dict.") :]] = torch.zeros((), dtype=dtype).expand(shape)
    return {"state_dict": state, "latent_avg": torch.zeros(18, 512), "opts": default_e4e_opts()}


class _TinyEncoder(nn.Module):
    """[B,3,256,256] -> [B,18,512]: per-image mean times a fixed ramp."""

    def __init__(self) -> None:
        super().__init__()
        self.ramp = nn.Parameter(torch.linspace(-1, 1, 18 * 512).reshape(18, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None, None] * self.ramp


def test_expected_shapes_cover_the_official_key_count():
    assert len(expected_e4e_shapes(decoder=False)) == 621
    full = expected_e4e_shapes()
    assert len(full) == 792
    assert full["state_dict.encoder.styles.17.linear.weight"] == (512, 512)
    assert full["state_dict.decoder.noises.noise_16"] == (1, 1, 1024, 1024)


def test_wplus_adapter_file_is_refused_naming_keys(tmp_path):
    path = tmp_path / "wplus_adapter.bin"
    torch.save(
        {
            "w_proj": {
                "proj_0.weight": torch.zeros(768, 2048),
                "norm.weight": torch.ones(768),
                "norm.bias": torch.zeros(768),
            },
            "wplus_adapter": {
                "1.to_k_wplus.weight": torch.zeros(320, 768),
                "1.to_v_wplus.weight": torch.zeros(320, 768),
            },
        },
        path,
    )
    with pytest.raises(CheckpointError) as err:
        load_e4e(path)
    msg = str(err.value)
    assert str(path) in msg and "e4e" in msg
    assert "state_dict.encoder.input_layer.0.weight" in msg  # first missing key
    assert "w_proj.proj_0.weight" in msg  # first unexpected key
    assert "W+ adapter for SD1.5" in msg  # what the file is


def test_stable_diffusion_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768)}, path
    )
    with pytest.raises(CheckpointError, match=r"full Stable Diffusion checkpoint \(SD1.5\)"):
        load_e4e(path)


def test_saved_wplus_latent_is_refused(tmp_path):
    path = tmp_path / "face.pth"
    torch.save(torch.zeros(1, 18, 512), path)
    with pytest.raises(CheckpointError, match=r"single tensor of shape \[1, 18, 512\].*W\+ latent"):
        load_e4e(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save(
        {"state_dict": {"encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, "latent_avg": torch.zeros(512)}, path
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_e4e(path)


def test_opts_dict_is_kept_and_advisory(caplog):
    ckpt = _zeros_checkpoint(decoder=False)
    ckpt["opts"] = dict(default_e4e_opts(), encoder_type="GradualStyleEncoder", stylegan_size=512)
    with caplog.at_level(logging.WARNING, logger="likeness.models.inversion.e4e_model"):
        inv = e4e_from_checkpoint(ckpt, source="odd_opts.pt")
    assert inv.opts["encoder_type"] == "GradualStyleEncoder" and inv.opts["progressive_steps"][1] == 20000
    text = caplog.text
    assert "encoder_type='GradualStyleEncoder'" in text and "stylegan_size=512" in text
    assert inv.encoder.style_count == 18  # still the FFHQ-1024 encoder


def test_extra_training_entries_are_ignored():
    ckpt = _zeros_checkpoint(decoder=False)
    ckpt["optimizer"] = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}
    ckpt["global_step"] = 20000
    ckpt["discriminator_state_dict"] = {"w_discriminator.0.weight": torch.zeros(2, 2)}
    assert e4e_from_checkpoint(ckpt, source="train_ckpt.pt").latent_avg.shape == (18, 512)


@pytest.mark.parametrize(
    "shape,expected_row3",
    [((512,), 0.0), ((18, 512), 3.0), ((1, 18, 512), 3.0)],
)
def test_latent_avg_shapes_normalised(shape, expected_row3):
    rows = torch.arange(18.0)[:, None].expand(18, 512)
    value = torch.zeros(512) if shape == (512,) else rows.reshape(shape)
    out = normalize_latent_avg(value, "x.pt")
    assert out.shape == (18, 512) and out.dtype == torch.float32
    assert torch.all(out[3] == expected_row3)


def test_bad_or_missing_latent_avg_is_refused():
    with pytest.raises(CheckpointError, match=r"x.pt: latent_avg has shape \[17, 512\]"):
        normalize_latent_avg(torch.zeros(17, 512), "x.pt")
    ckpt = _zeros_checkpoint(decoder=False)
    del ckpt["latent_avg"]
    with pytest.raises(CheckpointError, match="no 'latent_avg' tensor"):
        e4e_from_checkpoint(ckpt, source="nolatent.pt")


def test_partial_decoder_is_refused():
    ckpt = _zeros_checkpoint()
    del ckpt["state_dict"]["decoder.noises.noise_3"]
    with pytest.raises(CheckpointError, match=r"1 missing keys, first: state_dict\.decoder\.noises\.noise_3"):
        e4e_from_checkpoint(ckpt, source="partial.pt")


def test_encode_adds_latent_avg():
    enc = _TinyEncoder()
    latent_avg = torch.randn(18, 512, generator=torch.Generator().manual_seed(1))
    inv = E4EInverter(enc, latent_avg, source="tiny")
    x = torch.rand(3, 3, 256, 256) * 2 - 1
    w = inv.encode(x)
    assert w.shape == (3, 18, 512) and w.dtype == torch.float32
    torch.testing.assert_close(w, enc(x).detach() + latent_avg[None], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 3, 256, 256\].*got \[1, 256, 256, 3\]"):
        inv.encode(torch.zeros(1, 256, 256, 3))
    with pytest.raises(ValueError, match=r"got \[1, 3, 512, 512\]"):
        inv.encode(torch.zeros(1, 3, 512, 512))
    # a bf16 encoder still returns float32 W+
    inv.to(dtype=torch.bfloat16)
    assert inv.dtype == torch.bfloat16 and enc.ramp.dtype == torch.bfloat16
    assert inv.encode(x).dtype == torch.float32


def test_decoder_is_built_only_on_first_decode():
    ckpt = _zeros_checkpoint()
    inv = e4e_from_checkpoint(ckpt, source="zeros.pt")
    assert inv.has_decoder and not inv.decoder_loaded
    w = torch.zeros(2, 18, 512)
    img = inv.decode(w, size=6, fast=True)  # stops at 8 px, resized to 6
    assert inv.decoder_loaded
    assert img.shape == (2, 3, 6, 6) and img.dtype == torch.float32 and torch.isfinite(img).all()
    # the kept CPU tensors became the module's weights (no copy)
    kept = ckpt["state_dict"]["decoder.convs.0.conv.weight"]
    assert inv.decoder().convs[0].conv.weight.data_ptr() == kept.data_ptr()
    with pytest.raises(ValueError, match=r"absolute W\+ \[B, 18, 512\]; got \[2, 14, 512\]"):
        inv.decode(torch.zeros(2, 14, 512))


def test_encoder_only_file_has_no_preview():
    inv = e4e_from_checkpoint(_zeros_checkpoint(decoder=False), source="enc_only.pt")
    assert not inv.has_decoder
    with pytest.raises(CheckpointError, match="enc_only.pt has no decoder"):
        inv.decode(torch.zeros(1, 18, 512), size=8, fast=True)


def test_build_e4e_checkpoint_is_loadable_and_finite():
    ckpt = build_e4e_checkpoint(seed=3, latent_avg_shape=(512,))
    assert set(ckpt) == {"state_dict", "latent_avg", "opts"}
    assert ckpt["latent_avg"].shape == (512,) and ckpt["opts"]["encoder_type"] == "Encoder4Editing"
    inv = e4e_from_checkpoint(ckpt, source="random.pt")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    w = inv.encode(x)
    assert torch.isfinite(w).all() and w.abs().max().item() < 100
    img = inv.decode(w, size=16, fast=True)
    assert torch.isfinite(img).all() and 1e-3 < img.std().item() < 100
