"""SD1.5 single-file layout and random-weight smoke checkpoints (no ComfyUI, no big files)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors import safe_open

from likeness.tools.smoke import sd15_layout
from likeness.tools.smoke.sd15_layout import (
    CLIP_PREFIX,
    SCHEDULE_KEYS,
    UNET_PREFIX,
    VAE_PREFIX,
    sd15_attn2_sites,
    sd15_checkpoint_shapes,
    sd15_param_count,
    sd15_smoke_state_dict,
    write_sd15_smoke_checkpoint,
)

ATTN2_K = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SAMPLE_KEYS = [
    ATTN2_K,
    UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.norm2.weight",
    UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.norm2.bias",
    UNET_PREFIX + "input_blocks.1.1.proj_in.bias",
    UNET_PREFIX + "out.2.weight",
    VAE_PREFIX + "decoder.conv_out.weight",
    CLIP_PREFIX + "embeddings.position_ids",
    CLIP_PREFIX + "encoder.layers.0.mlp.fc1.bias",
    "alphas_cumprod",
]


def _count(shapes: dict, prefix: str) -> int:
    return sum(k.startswith(prefix) for k in shapes)


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.mark.parametrize(("variant", "n_unet"), [("full", 686), ("reduced", 286)])
def test_key_counts_per_prefix(variant, n_unet):
    shapes = sd15_checkpoint_shapes(variant)
    assert _count(shapes, UNET_PREFIX) == n_unet
    assert _count(shapes, VAE_PREFIX) == 248
    assert _count(shapes, CLIP_PREFIX) == 197
    assert [k for k in shapes if k in SCHEDULE_KEYS] == list(SCHEDULE_KEYS)
    assert len(shapes) == n_unet + 248 + 197 + 12


def test_known_keys_and_shapes():
    for variant in ("full", "reduced"):
        s = sd15_checkpoint_shapes(variant)
        assert s[ATTN2_K] == (320, 768)
        assert s[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight"] == (320, 320)
        assert UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_q.bias" not in s
        assert s[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.bias"] == (320,)
        assert s[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"] == (2560, 320)
        assert s[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.ff.net.2.weight"] == (320, 1280)
        assert s[UNET_PREFIX + "input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
        assert s[UNET_PREFIX + "time_embed.0.weight"] == (1280, 320)
        assert s[UNET_PREFIX + "input_blocks.0.0.weight"] == (320, 4, 3, 3)
        assert s[UNET_PREFIX + "out.2.weight"] == (4, 320, 3, 3)
        assert s[UNET_PREFIX + "middle_block.1.transformer_blocks.0.attn2.to_v.weight"][1] == 768
        assert s[VAE_PREFIX + "decoder.conv_out.weight"] == (3, 128, 3, 3)
        assert s[VAE_PREFIX + "encoder.conv_out.weight"] == (8, 512, 3, 3)
        assert s[VAE_PREFIX + "decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
        assert s[VAE_PREFIX + "decoder.up.1.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
        assert s[VAE_PREFIX + "quant_conv.weight"] == (8, 8, 1, 1)
        assert s[VAE_PREFIX + "post_quant_conv.weight"] == (4, 4, 1, 1)
        assert s[CLIP_PREFIX + "embeddings.token_embedding.weight"] == (49408, 768)
        assert s[CLIP_PREFIX + "embeddings.position_embedding.weight"] == (77, 768)
        assert s[CLIP_PREFIX + "encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
        assert s[CLIP_PREFIX + "final_layer_norm.weight"] == (768,)
        assert CLIP_PREFIX + "encoder.layers.12.mlp.fc1.weight" not in s
    full = sd15_checkpoint_shapes("full")
    assert full[UNET_PREFIX + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"] == (1280, 768)
    assert full[UNET_PREFIX + "input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert full[UNET_PREFIX + "output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)  # level 3: no attention
    assert full[UNET_PREFIX + "output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert full[UNET_PREFIX + "output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    reduced = sd15_checkpoint_shapes("reduced")
    assert reduced[UNET_PREFIX + "input_blocks.2.0.op.weight"] == (320, 320, 3, 3)
    assert reduced[UNET_PREFIX + "output_blocks.1.2.conv.weight"] == (640, 640, 3, 3)
    assert reduced[UNET_PREFIX + "output_blocks.3.0.in_layers.0.weight"] == (640,)  # 320 + 320 skip
    assert not any(k.startswith(UNET_PREFIX + "input_blocks.4.") for k in reduced)


def test_parameter_counts():
    assert sd15_param_count("full") == 859_520_964
    assert sd15_param_count("reduced") == 107_431_044
    for variant in ("full", "reduced"):
        assert sd15_param_count(variant, VAE_PREFIX) == 83_653_863
        assert sd15_param_count(variant, CLIP_PREFIX) == 123_060_480 + 77  # + position_ids


def _sites_from_keys(shapes: dict) -> dict:
    names = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}
    found = {}
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith(".attn2.to_k.weight"):
            parts = key[len(UNET_PREFIX) :].split(".")
            number = 0 if parts[0] == "middle_block" else int(parts[1])
            index = int(parts[parts.index("transformer_blocks") + 1])
            assert shape[1] == 768
            found[(names[parts[0]], number, index)] = shape[0]
    return found


def test_attn2_sites_match_the_keys_and_the_sd15_table():
    full = sd15_attn2_sites("full")
    assert full == _sites_from_keys(sd15_checkpoint_shapes("full"))
    assert list(full.items()) == [
        (("input", 1, 0), 320),
        (("input", 2, 0), 320),
        (("input", 4, 0), 640),
        (("input", 5, 0), 640),
        (("input", 7, 0), 1280),
        (("input", 8, 0), 1280),
        (("middle", 0, 0), 1280),
        (("output", 3, 0), 1280),
        (("output", 4, 0), 1280),
        (("output", 5, 0), 1280),
        (("output", 6, 0), 640),
        (("output", 7, 0), 640),
        (("output", 8, 0), 640),
        (("output", 9, 0), 320),
        (("output", 10, 0), 320),
        (("output", 11, 0), 320),
    ]
    reduced = sd15_attn2_sites("reduced")
    assert reduced == _sites_from_keys(sd15_checkpoint_shapes("reduced"))
    assert list(reduced.items()) == [
        (("input", 1, 0), 320),
        (("input", 3, 0), 640),
        (("middle", 0, 0), 640),
        (("output", 0, 0), 640),
        (("output", 1, 0), 640),
        (("output", 2, 0), 320),
        (("output", 3, 0), 320),
    ]


def test_unknown_variant_and_dtype_are_refused():
    with pytest.raises(ValueError, match=r"unknown SD1.5 smoke variant 'tiny'; choose one of \['full', 'reduced'\]"):
        sd15_checkpoint_shapes("tiny")
    with pytest.raises(ValueError, match="dtype must be float16, bfloat16 or float32, got torch.int8"):
        sd15_smoke_state_dict(dtype=torch.int8, keys=[ATTN2_K])


def test_state_dict_is_deterministic_per_key():
    a = sd15_smoke_state_dict("reduced", seed=0, keys=SAMPLE_KEYS)
    b = sd15_smoke_state_dict("reduced", seed=0, keys=list(reversed(SAMPLE_KEYS)))
    c = sd15_smoke_state_dict("reduced", seed=1, keys=[ATTN2_K])
    assert {k: _sha(v) for k, v in a.items()} == {k: _sha(v) for k, v in b.items()}
    assert _sha(a[ATTN2_K]) != _sha(c[ATTN2_K])
    # the shared keys of both variants get the same tensors
    full = sd15_smoke_state_dict("full", seed=0, keys=[ATTN2_K])
    assert torch.equal(full[ATTN2_K], a[ATTN2_K])


def test_initialisation_statistics():
    sd = sd15_smoke_state_dict("reduced", seed=3, keys=SAMPLE_KEYS)
    w = sd[ATTN2_K].float()
    assert sd[ATTN2_K].dtype == torch.float16
    assert abs(w.std().item() - math.sqrt(1 / 768)) < 0.05 * math.sqrt(1 / 768)
    assert w.abs().max().item() <= math.sqrt(3 / 768) * 1.001
    q = sd[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"].float()
    assert abs(q.std().item() - math.sqrt(1 / 320)) < 0.05 * math.sqrt(1 / 320)
    conv = sd[VAE_PREFIX + "decoder.conv_out.weight"].float()
    assert abs(conv.std().item() - math.sqrt(1 / (128 * 9))) < 0.1 * math.sqrt(1 / (128 * 9))
    assert torch.equal(sd[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.norm2.weight"], torch.ones(320).half())
    assert torch.equal(sd[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.norm2.bias"], torch.zeros(320).half())
    for key in (UNET_PREFIX + "input_blocks.1.1.proj_in.bias", CLIP_PREFIX + "encoder.layers.0.mlp.fc1.bias"):
        b = sd[key].float()
        assert 0 < b.abs().max().item() <= 0.01 * 1.001 and b.std().item() > 0.003, key
    assert sd[CLIP_PREFIX + "embeddings.position_ids"].dtype == torch.int64
    assert torch.equal(sd[CLIP_PREFIX + "embeddings.position_ids"], torch.arange(77).unsqueeze(0))


def test_schedule_buffers_are_the_sd15_scaled_linear_schedule():
    sd = sd15_smoke_state_dict("reduced", keys=SCHEDULE_KEYS)
    assert all(v.dtype == torch.float32 and v.shape == (1000,) for v in sd.values())
    assert sd["betas"][0].item() == pytest.approx(0.00085, rel=1e-6)
    assert sd["betas"][-1].item() == pytest.approx(0.012, rel=1e-6)
    assert sd["alphas_cumprod"][-1].item() == pytest.approx(0.0046, abs=1e-4)  # SD1.5 sigma_max = 14.61
    sigma_max = ((1 - sd["alphas_cumprod"][-1]) / sd["alphas_cumprod"][-1]).sqrt().item()
    assert sigma_max == pytest.approx(14.6146, abs=1e-3)
    assert sd["alphas_cumprod_prev"][0].item() == 1.0
    assert torch.allclose(sd["sqrt_alphas_cumprod"] ** 2, sd["alphas_cumprod"], rtol=1e-6)


@pytest.fixture()
def small_layout(monkeypatch):
    """The writer over an 11-key subset (same generation code, no 0.6 GB file in the unit tier)."""
    full = sd15_layout.sd15_checkpoint_shapes("reduced")
    subset = {k: full[k] for k in SAMPLE_KEYS + ["betas"]}
    monkeypatch.setattr(sd15_layout, "sd15_checkpoint_shapes", lambda variant="reduced", in_channels=4: dict(subset))
    return subset


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_writer_streams_a_valid_safetensors_file(tmp_path, small_layout, dtype):
    path = write_sd15_smoke_checkpoint(tmp_path / "sub" / "smoke.safetensors", seed=5, dtype=dtype)
    assert path == tmp_path / "sub" / "smoke.safetensors"
    assert not (tmp_path / "sub" / "smoke.safetensors.tmp").exists()
    expected = sd15_smoke_state_dict("reduced", seed=5, dtype=dtype, keys=small_layout)
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(small_layout)
        meta = json.loads(f.metadata()["likeness.smoke"])
        assert meta == {"model": "sd15", "variant": "reduced", "seed": 5, "random_weights": True}
        assert f.metadata()["format"] == "pt"
        for key in small_layout:
            t = f.get_tensor(key)
            assert t.dtype == expected[key].dtype and torch.equal(t, expected[key]), key
    assert expected[ATTN2_K].dtype == dtype
    assert expected["betas"].dtype == torch.float32


def test_writer_is_byte_deterministic(tmp_path, small_layout):
    a = write_sd15_smoke_checkpoint(tmp_path / "a.safetensors", seed=7)
    b = write_sd15_smoke_checkpoint(tmp_path / "b.safetensors", seed=7)
    c = write_sd15_smoke_checkpoint(tmp_path / "c.safetensors", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


INPUT_CONV = UNET_PREFIX + "input_blocks.0.0.weight"


@pytest.mark.parametrize("variant", ["full", "reduced"])
def test_inpainting_layout_widens_only_the_input_conv(variant):
    plain = sd15_checkpoint_shapes(variant)
    inpaint = sd15_checkpoint_shapes(variant, in_channels=9)
    assert inpaint[INPUT_CONV] == (320, 9, 3, 3)
    assert plain[INPUT_CONV] == (320, 4, 3, 3)
    assert list(inpaint) == list(plain)  # same keys, same order
    assert [k for k in plain if plain[k] != inpaint[k]] == [INPUT_CONV]
    assert inpaint[UNET_PREFIX + "out.2.weight"] == (4, 320, 3, 3)  # still predicts 4 latent channels
    assert sd15_param_count(variant, in_channels=9) - sd15_param_count(variant) == 320 * 5 * 9
    assert sd15_attn2_sites(variant) == _sites_from_keys(inpaint)


def test_inpainting_tensors_and_refused_in_channels(tmp_path):
    sd = sd15_smoke_state_dict("reduced", seed=2, keys=[INPUT_CONV, ATTN2_K], in_channels=9)
    assert sd[INPUT_CONV].shape == (320, 9, 3, 3) and sd[INPUT_CONV].dtype == torch.float16
    assert sd[INPUT_CONV].float().abs().max().item() <= math.sqrt(3 / 81) * 1.001  # fan_in 9 * 3 * 3
    assert torch.equal(sd[ATTN2_K], sd15_smoke_state_dict("reduced", seed=2, keys=[ATTN2_K])[ATTN2_K])
    with pytest.raises(ValueError, match=r"in_channels must be 4 \(SD1.5\) or 9 \(SD1.5 inpainting\), got 8"):
        sd15_checkpoint_shapes("reduced", in_channels=8)
    with pytest.raises(ValueError, match="got 5"):
        write_sd15_smoke_checkpoint(tmp_path / "x.safetensors", in_channels=5)
    assert list(tmp_path.iterdir()) == []


def test_writer_records_the_inpainting_layout(tmp_path, monkeypatch):
    real = sd15_layout.sd15_checkpoint_shapes
    keys = [INPUT_CONV, ATTN2_K, "betas"]
    monkeypatch.setattr(
        sd15_layout,
        "sd15_checkpoint_shapes",
        lambda variant="reduced", in_channels=4: {k: v for k, v in real(variant, in_channels).items() if k in keys},
    )
    path = write_sd15_smoke_checkpoint(tmp_path / "inpaint.safetensors", seed=4, in_channels=9)
    expected = sd15_smoke_state_dict("reduced", seed=4, keys=keys, in_channels=9)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["likeness.smoke"])
        assert meta == {"model": "sd15", "variant": "reduced", "seed": 4, "random_weights": True, "in_channels": 9}
        assert f.get_slice(INPUT_CONV).get_shape() == [320, 9, 3, 3]
        for key in keys:
            assert torch.equal(f.get_tensor(key), expected[key]), key
