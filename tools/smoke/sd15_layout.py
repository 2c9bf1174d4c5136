"""Random-weight Stable Diffusion 1.5 checkpoints in the official single-file layout.

Used by the "smoke models" command and by ComfyUI-tier tests: a CPU end-to-end
run needs a checkpoint that ComfyUI's ``CheckpointLoaderSimple`` detects as
``SD15`` without downloading real weights. Pure PyTorch; never imports ComfyUI
or diffusers.

Layout (original LDM / CompVis single file, as ``v1-5-pruned-emaonly``):

* ``model.diffusion_model.`` - openaimodel ``UNetModel``: ``time_embed``,
  ``input_blocks``, ``middle_block``, ``output_blocks``, ``out``. ResBlocks
  (``in_layers``/``emb_layers``/``out_layers``/``skip_connection``) and
  SpatialTransformers with 1x1-conv ``proj_in``/``proj_out`` and one
  ``transformer_blocks.0`` (``attn1``/``attn2`` with bias-free ``to_q``/``to_k``/
  ``to_v``, ``to_out.0`` with bias, ``ff.net.0.proj``, ``ff.net.2``,
  ``norm1``-``norm3``).
* ``first_stage_model.`` - the full SD VAE (``AutoencoderKL``: ch 128, ch_mult
  [1, 2, 4, 4], 2 res blocks, z 4, mid attention as 1x1 convs ``q``/``k``/``v``/
  ``proj_out``, ``quant_conv``, ``post_quant_conv``), 248 tensors.
* ``cond_stage_model.transformer.text_model.`` - CLIP ViT-L/14 text encoder
  (12 layers, width 768, vocabulary 49408, 77 positions, ``final_layer_norm``)
  plus the ``embeddings.position_ids`` buffer (int64 [1, 77]), 197 tensors.
* the 12 DDPM schedule buffers of LDM's ``register_schedule`` (``betas``,
  ``alphas_cumprod``, ... float32 [1000], scaled-linear 0.00085..0.012, real
  values, not random). ComfyUI ignores them ("left over keys", debug log).

Variants (``UNET_VARIANTS``):

* ``"full"``: SD1.5 proper. model_channels 320, channel_mult [1, 2, 4, 4],
  2 res blocks per level, attention at levels 0-2, context 768, 8 heads;
  859,520,964 UNet parameters, 686 UNet tensors. 16 attn2 sites (ComfyUI
  ``(block, number, index)`` keys): input 1, 2 (inner 320), 4, 5 (640), 7, 8
  (1280); middle 0 (1280); output 3, 4, 5 (1280), 6, 7, 8 (640), 9, 10, 11 (320).
* ``"reduced"``: the smallest UNet that keeps what the tests need - ComfyUI
  still detects it as SD15 (detection only checks model_channels 320, context
  768, conv projections, no adm; depths come from the keys), it has a
  downsample and an upsample, two inner widths and a middle-block
  transformer. model_channels 320, channel_mult [1, 2], 1 res block per level,
  attention at both levels, context 768, 8 heads; 107,431,044 UNet parameters,
  ~0.63 GB in fp16 with VAE and CLIP. 7 attn2 sites: ``("input", 1, 0)``
  inner 320, ``("input", 3, 0)`` 640, ``("middle", 0, 0)`` 640,
  ``("output", 0, 0)`` 640, ``("output", 1, 0)`` 640, ``("output", 2, 0)``
  320, ``("output", 3, 0)`` 320 (:func:`sd15_attn2_sites`).

Both variants keep the full VAE and the full CLIP-L (ComfyUI requires them).

Inpainting layout (``in_channels=9``, either variant): the only difference is
the UNet's input conv ``model.diffusion_model.input_blocks.0.0.weight``
[320, 9, 3, 3] (4 noisy-latent + 1 mask + 4 masked-image-latent channels, as
``sd-v1-5-inpainting``). ComfyUI detects ``in_channels`` from that key, still
as ``SD15``, and its ``inpaint_model()`` (``in_channels > 4``) makes the model
concatenate ``("mask", "masked_image")`` (``model.model.concat_keys``). The
default ``in_channels=4`` leaves every key, tensor and file byte unchanged.

Initialisation (:func:`sd15_smoke_state_dict`): every tensor is drawn from its
own ``torch.Generator`` seeded from ``(seed, key)``, so any subset can be
regenerated bit-exactly. Weights with >= 2 dims ~ U(-a, a), a = sqrt(3/fan_in)
(std sqrt(1/fan_in), fan_in = prod(shape[1:])); 1-D weights are norm scales = 1
and their biases 0; other biases ~ U(-0.01, 0.01). Nothing is zero-initialised,
so outputs depend on every input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "CLIP_PREFIX",
    "SCHEDULE_KEYS",
    "IN_CHANNELS",
    "UNetLayout",
    "UNET_VARIANTS",
    "sd15_checkpoint_shapes",
    "sd15_attn2_sites",
    "sd15_param_count",
    "sd15_smoke_tensor",
    "sd15_smoke_state_dict",
    "write_sd15_smoke_checkpoint",
]

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
POSITION_IDS_KEY = CLIP_PREFIX + "embeddings.position_ids"

SCHEDULE_KEYS: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
_NUM_TIMESTEPS = 1000
_LINEAR_START, _LINEAR_END = 0.00085, 0.0120

_BIAS_RANGE = 0.01
IN_CHANNELS = (4, 9)  # latent only (txt2img), latent + mask + masked-image latent (inpainting)
_SAFETENSORS_DTYPES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.int64: "I64",
}


@dataclass(frozen=True)
class UNetLayout:
    """Hyper-parameters of an openaimodel ``UNetModel`` with SD1.5-style blocks.

    Attributes:
        model_channels: base width (320 for everything ComfyUI detects as SD15).
        channel_mult: width multiplier per resolution level.
        num_res_blocks: ResBlocks per level on the way down (``+ 1`` on the way up).
        attention_levels: levels (0 = full latent resolution) whose blocks carry a
            SpatialTransformer; the middle block always has one.
        context_dim: width of the cross-attention context (CLIP-L: 768).
        num_heads: attention heads (dim_head = inner width / num_heads).
        in_channels: latent channels in.
        out_channels: latent channels out.
    """

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)
    context_dim: int = 768
    num_heads: int = 8
    in_channels: int = 4
    out_channels: int = 4


UNET_VARIANTS: dict[str, UNetLayout] = {
    "full": UNetLayout(),
    "reduced": UNetLayout(channel_mult=(1, 2), num_res_blocks=1, attention_levels=(0, 1)),
}

Shapes = dict[str, tuple[int, ...]]


def _layout(variant: str, in_channels: int = 4) -> UNetLayout:
    if variant not in UNET_VARIANTS:
        raise ValueError(f"unknown SD1.5 smoke variant {variant!r}; choose one of {sorted(UNET_VARIANTS)}")
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"in_channels must be 4 (SD1.5) or 9 (SD1.5 inpainting), got {in_channels!r}")
    return replace(UNET_VARIANTS[variant], in_channels=in_channels)


def _conv(s: Shapes, name: str, c_out: int, c_in: int, k: int) -> None:
    s[f"{name}.weight"] = (c_out, c_in, k, k)
    s[f"{name}.bias"] = (c_out,)


def _linear(s: Shapes, name: str, c_out: int, c_in: int, bias: bool = True) -> None:
    s[f"{name}.weight"] = (c_out, c_in)
    if bias:
        s[f"{name}.bias"] = (c_out,)


def _norm(s: Shapes, name: str, c: int) -> None:
    s[f"{name}.weight"] = (c,)
    s[f"{name}.bias"] = (c,)


# ----------------------------------------------------------------------------- UNet


def _unet_resblock(s: Shapes, p: str, c_in: int, c_out: int, emb: int) -> None:
    _norm(s, p + "in_layers.0", c_in)
    _conv(s, p + "in_layers.2", c_out, c_in, 3)
    _linear(s, p + "emb_layers.1", c_out, emb)
    _norm(s, p + "out_layers.0", c_out)
    _conv(s, p + "out_layers.3", c_out, c_out, 3)
    if c_in != c_out:
        _conv(s, p + "skip_connection", c_out, c_in, 1)


def _unet_transformer(s: Shapes, p: str, c: int, context_dim: int) -> None:
    _norm(s, p + "norm", c)
    _conv(s, p + "proj_in", c, c, 1)
    b = p + "transformer_blocks.0."
    for attn, kv_in in (("attn1", c), ("attn2", context_dim)):
        if attn == "attn2":
            _linear(s, b + "ff.net.0.proj", 8 * c, c)  # GEGLU: 2 x 4c
            _linear(s, b + "ff.net.2", c, 4 * c)
        _linear(s, b + f"{attn}.to_q", c, c, bias=False)
        _linear(s, b + f"{attn}.to_k", c, kv_in, bias=False)
        _linear(s, b + f"{attn}.to_v", c, kv_in, bias=False)
        _linear(s, b + f"{attn}.to_out.0", c, c)
    for i in (1, 2, 3):
        _norm(s, b + f"norm{i}", c)
    _conv(s, p + "proj_out", c, c, 1)


def _walk_unet(c: UNetLayout, s: Shapes | None, sites: dict[tuple[str, int, int], int] | None) -> None:
    """Build the UNet keys into ``s`` and/or its attn2 sites into ``sites`` (same walk)."""
    shapes: Shapes = {} if s is None else s
    mc, emb = c.model_channels, 4 * c.model_channels
    last = len(c.channel_mult) - 1
    _linear(shapes, "time_embed.0", emb, mc)
    _linear(shapes, "time_embed.2", emb, emb)
    _conv(shapes, "input_blocks.0.0", mc, c.in_channels, 3)
    skips, ch, n = [mc], mc, 1
    for level, mult in enumerate(c.channel_mult):
        for _ in range(c.num_res_blocks):
            _unet_resblock(shapes, f"input_blocks.{n}.0.", ch, mult * mc, emb)
            ch = mult * mc
            if level in c.attention_levels:
                _unet_transformer(shapes, f"input_blocks.{n}.1.", ch, c.context_dim)
                if sites is not None:
                    sites[("input", n, 0)] = ch
            skips.append(ch)
            n += 1
        if level != last:
            _conv(shapes, f"input_blocks.{n}.0.op", ch, ch, 3)
            skips.append(ch)
            n += 1
    _unet_resblock(shapes, "middle_block.0.", ch, ch, emb)
    _unet_transformer(shapes, "middle_block.1.", ch, c.context_dim)
    if sites is not None:
        sites[("middle", 0, 0)] = ch
    _unet_resblock(shapes, "middle_block.2.", ch, ch, emb)
    n = 0
    for level in range(last, -1, -1):
        for i in range(c.num_res_blocks + 1):
            out = c.channel_mult[level] * mc
            _unet_resblock(shapes, f"output_blocks.{n}.0.", ch + skips.pop(), out, emb)
            ch, j = out, 1
            if level in c.attention_levels:
                _unet_transformer(shapes, f"output_blocks.{n}.1.", ch, c.context_dim)
                if sites is not None:
                    sites[("output", n, 0)] = ch
                j = 2
            if level != 0 and i == c.num_res_blocks:
                _conv(shapes, f"output_blocks.{n}.{j}.conv", ch, ch, 3)
            n += 1
    _norm(shapes, "out.0", ch)
    _conv(shapes, "out.2", c.out_channels, mc, 3)


# ----------------------------------------------------------------------------- VAE


def _vae_resblock(s: Shapes, p: str, c_in: int, c_out: int) -> None:
    _norm(s, p + "norm1", c_in)
    _conv(s, p + "conv1", c_out, c_in, 3)
    _norm(s, p + "norm2", c_out)
    _conv(s, p + "conv2", c_out, c_out, 3)
    if c_in != c_out:
        _conv(s, p + "nin_shortcut", c_out, c_in, 1)


def _vae_mid(s: Shapes, p: str, c: int) -> None:
    _vae_resblock(s, p + "mid.block_1.", c, c)
    _norm(s, p + "mid.attn_1.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        _conv(s, p + f"mid.attn_1.{name}", c, c, 1)
    _vae_resblock(s, p + "mid.block_2.", c, c)


def _vae_shapes() -> Shapes:
    ch, mult, n_res, z = 128, (1, 2, 4, 4), 2, 4
    s: Shapes = {}
    _conv(s, "encoder.conv_in", ch, 3, 3)
    block_in = ch
    for level, m in enumerate(mult):
        for j in range(n_res):
            _vae_resblock(s, f"encoder.down.{level}.block.{j}.", block_in, ch * m)
            block_in = ch * m
        if level != len(mult) - 1:
            _conv(s, f"encoder.down.{level}.downsample.conv", block_in, block_in, 3)
    _vae_mid(s, "encoder.", block_in)
    _norm(s, "encoder.norm_out", block_in)
    _conv(s, "encoder.conv_out", 2 * z, block_in, 3)
    block_in = ch * mult[-1]
    _conv(s, "decoder.conv_in", block_in, z, 3)
    _vae_mid(s, "decoder.", block_in)
    for level in range(len(mult) - 1, -1, -1):
        for j in range(n_res + 1):
            _vae_resblock(s, f"decoder.up.{level}.block.{j}.", block_in, ch * mult[level])
            block_in = ch * mult[level]
        if level != 0:
            _conv(s, f"decoder.up.{level}.upsample.conv", block_in, block_in, 3)
    _norm(s, "decoder.norm_out", block_in)
    _conv(s, "decoder.conv_out", 3, block_in, 3)
    _conv(s, "quant_conv", 2 * z, 2 * z, 1)
    _conv(s, "post_quant_conv", z, z, 1)
    return s


# ----------------------------------------------------------------------------- CLIP-L text


def _clip_shapes() -> Shapes:
    width, layers, vocab, positions = 768, 12, 49408, 77
    s: Shapes = {
        "embeddings.token_embedding.weight": (vocab, width),
        "embeddings.position_embedding.weight": (positions, width),
        "embeddings.position_ids": (1, positions),
    }
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(s, p + f"self_attn.{proj}", width, width)
        _norm(s, p + "layer_norm1", width)
        _linear(s, p + "mlp.fc1", 4 * width, width)
        _linear(s, p + "mlp.fc2", width, 4 * width)
        _norm(s, p + "layer_norm2", width)
    _norm(s, "final_layer_norm", width)
    return s


# ----------------------------------------------------------------------------- public API


def sd15_checkpoint_shapes(variant: str = "reduced", in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """Every key and shape of an original-LDM SD1.5 single-file checkpoint.

    Args:
        variant: ``"full"`` (SD1.5) or ``"reduced"`` (small UNet, same VAE and CLIP);
            see the module docstring.
        in_channels: UNet input channels, 4 (SD1.5) or 9 (SD1.5 inpainting: only
            ``input_blocks.0.0.weight`` changes, to [320, 9, 3, 3]).

    Returns:
        ``{key: shape}`` in checkpoint order: UNet (``model.diffusion_model.``), VAE
        (``first_stage_model.``), CLIP-L text (``cond_stage_model.transformer.text_model.``,
        incl. ``embeddings.position_ids``), then the 12 schedule buffers (shape [1000]).
    """
    unet: Shapes = {}
    _walk_unet(_layout(variant, in_channels), unet, None)
    out: Shapes = {UNET_PREFIX + k: v for k, v in unet.items()}
    out.update({VAE_PREFIX + k: v for k, v in _vae_shapes().items()})
    out.update({CLIP_PREFIX + k: v for k, v in _clip_shapes().items()})
    out.update({k: (_NUM_TIMESTEPS,) for k in SCHEDULE_KEYS})
    return out


def sd15_attn2_sites(variant: str = "reduced") -> dict[tuple[str, int, int], int]:
    """Cross-attention sites of the variant's UNet, as ComfyUI keys them.

    Returns:
        ``{(block, number, index): inner width}`` in UNet execution order
        (= ComfyUI ``transformer_index`` order); ``block`` is ``"input"``,
        ``"middle"`` or ``"output"``, ``index`` the transformer inside the block (0).
    """
    sites: dict[tuple[str, int, int], int] = {}
    _walk_unet(_layout(variant), None, sites)
    return sites


def sd15_param_count(variant: str = "reduced", prefix: str = UNET_PREFIX, in_channels: int = 4) -> int:
    """Number of elements over the keys starting with ``prefix`` (default: the UNet)."""
    shapes = sd15_checkpoint_shapes(variant, in_channels)
    return sum(math.prod(shape) for key, shape in shapes.items() if key.startswith(prefix))


def _key_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _schedule() -> dict[str, torch.Tensor]:
    betas = torch.linspace(_LINEAR_START**0.5, _LINEAR_END**0.5, _NUM_TIMESTEPS, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {k: v.to(torch.float32) for k, v in values.items()}


def _dtype_of(key: str, dtype: torch.dtype) -> torch.dtype:
    if key == POSITION_IDS_KEY:
        return torch.int64
    if key in SCHEDULE_KEYS:
        return torch.float32
    return dtype


def sd15_smoke_tensor(
    key: str, shapes: dict[str, tuple[int, ...]], seed: int = 0, dtype: torch.dtype = torch.float16
) -> torch.Tensor:
    """One tensor of the smoke checkpoint (deterministic in ``(seed, key)`` only).

    Args:
        key: checkpoint key, must be in ``shapes``.
        shapes: output of :func:`sd15_checkpoint_shapes` (used to tell norm biases apart).
        seed: base seed.
        dtype: dtype of the weights (``position_ids`` stay int64, schedule buffers float32).

    Returns:
        CPU tensor of ``shapes[key]``.
    """
    if key not in shapes:
        raise KeyError(f"{key!r} is not an SD1.5 checkpoint key")
    shape = shapes[key]
    if key == POSITION_IDS_KEY:
        return torch.arange(shape[1], dtype=torch.int64).unsqueeze(0)
    if key in SCHEDULE_KEYS:
        return _schedule()[key]
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    if len(shape) >= 2:
        bound = math.sqrt(3.0 / math.prod(shape[1:]))
        t = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=g)
    elif key.endswith(".weight"):
        t = torch.ones(shape, dtype=torch.float32)  # norm scale
    elif len(shapes.get(key[: -len("bias")] + "weight", ())) == 1:
        t = torch.zeros(shape, dtype=torch.float32)  # norm shift
    else:
        t = torch.empty(shape, dtype=torch.float32).uniform_(-_BIAS_RANGE, _BIAS_RANGE, generator=g)
    return t.to(dtype)


def sd15_smoke_state_dict(
    variant: str = "reduced",
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    keys: Iterable[str] | None = None,
    in_channels: int = 4,
) -> dict[str, torch.Tensor]:
    """The smoke checkpoint as a state dict (all keys, or only ``keys``), without writing a file.

    Args:
        variant: ``"full"`` or ``"reduced"``.
        seed: base seed; each tensor depends only on ``(seed, key)``.
        dtype: weight dtype (float16, bfloat16 or float32).
        keys: subset of keys to build (checkpoint order is kept for ``None``).
        in_channels: 4 (SD1.5) or 9 (SD1.5 inpainting); see :func:`sd15_checkpoint_shapes`.

    Returns:
        ``{key: CPU tensor}``.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    shapes = sd15_checkpoint_shapes(variant, in_channels)
    wanted = list(shapes) if keys is None else list(keys)
    return {k: sd15_smoke_tensor(k, shapes, seed, dtype) for k in wanted}


def write_sd15_smoke_checkpoint(
    path: str | Path,
    variant: str = "reduced",
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    in_channels: int = 4,
) -> Path:
    """Write a random-weight SD1.5 checkpoint (``.safetensors``) that ComfyUI loads as SD15.

    Tensors are generated and streamed to disk one at a time (peak memory = the
    largest tensor, the 49408x768 token embedding), into ``<path>.tmp`` then
    renamed, so a killed run leaves no half-written checkpoint. The file's
    ``__metadata__`` records variant, seed, that the weights are random and,
    for an inpainting layout only, ``in_channels``.

    Args:
        path: output file (parent folders are created).
        variant: ``"full"`` (2.13 GB in fp16) or ``"reduced"`` (0.63 GB in fp16).
        seed: base seed; same seed -> byte-identical file.
        dtype: weight dtype (float16, bfloat16 or float32).
        in_channels: 4 (SD1.5) or 9 (SD1.5 inpainting, detected by ComfyUI as an
            inpainting SD15 model); the default writes the same bytes as before.

    Returns:
        The written path.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this writer needs a little-endian machine")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = sd15_checkpoint_shapes(variant, in_channels)
    header: dict[str, object] = {}
    offset = 0
    for key, shape in shapes.items():
        dt = _dtype_of(key, dtype)
        nbytes = math.prod(shape) * torch.empty((), dtype=dt).element_size()
        header[key] = {
            "dtype": _SAFETENSORS_DTYPES[dt],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    smoke: dict[str, object] = {"model": "sd15", "variant": variant, "seed": seed, "random_weights": True}
    if in_channels != 4:
        smoke["in_channels"] = in_channels
    header["__metadata__"] = {"format": "pt", "likeness.smoke": json.dumps(smoke)}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    start = time.perf_counter()
    with tmp.open("wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for key, shape in shapes.items():
            t = sd15_smoke_tensor(key, shapes, seed, dtype).contiguous()
            if tuple(t.shape) != shape or t.dtype != _dtype_of(key, dtype):  # internal consistency
                raise RuntimeError(f"generated {key} as {tuple(t.shape)} {t.dtype}, expected {shape}")
            fh.write(t.reshape(-1).view(torch.uint8).numpy().data)
    os.replace(tmp, path)
    logger.info(
        "wrote SD1.5 smoke checkpoint %s (variant %s, in_channels %d, seed %d, %s, %.2f GB) in %.1f s",
        path,
        variant,
        in_channels,
        seed,
        dtype,
        path.stat().st_size / 1e9,
        time.perf_counter() - start,
    )
    return path
