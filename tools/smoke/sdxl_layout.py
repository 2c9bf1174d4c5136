"""Random-weight SDXL files in the official layouts: the single-file checkpoint and the IdentityNet ControlNet.

Pure PyTorch (never imports ComfyUI or diffusers); the generation and streaming
code is :mod:`.sd15_layout`'s, so each tensor depends only on ``(seed, key)``.

**Checkpoint** (``sd_xl_base_1.0.safetensors`` layout, SGM single file):

* ``model.diffusion_model.``: the SDXL UNet exactly (ComfyUI's detection needs
  the transformer depths (0, 0, 2, 2, 10, 10), and InstantID / PSTF need all 70
  attn2 sites at widths 640 / 1280): model_channels 320, channel_mult (1, 2, 4),
  2 res blocks, transformer depth (0, 2, 10) per level and 10 in the middle,
  Linear projections, context 2048, ``label_emb`` 2816 -> 1280; 2,567,463,684
  parameters (:func:`sdxl_param_count`);
* ``first_stage_model.``: the SD VAE (SDXL uses the same architecture);
* ``conditioner.embedders.0.transformer.text_model.``: CLIP ViT-L/14 text (HF names);
* ``conditioner.embedders.1.model.``: OpenCLIP ViT-bigG/14 text (32 layers, width
  1280, fused ``in_proj``, ``text_projection``, ``logit_scale``).

Nothing smaller is possible in shapes: ComfyUI rejects any other depth and the
CLIP-G loader its fixed shapes. The smallest dtype ComfyUI reads is fp8
(``F8_E4M3``, as community fp8 SDXL checkpoints use): 3.47 GB instead of 6.94 GB
in fp16, and half the memory while ComfyUI loads it; ComfyUI converts the weights
on load (fp32 UNet on a CPU, 10.3 GB of RAM, unless started with ``--bf16-unet``).

**IdentityNet** (``InstantX/InstantID`` ``ControlNetModel/``, diffusers layout):
``diffusion_pytorch_model.safetensors`` + ``config.json`` of an SDXL
``ControlNetModel`` (down blocks and middle block of the SDXL UNet with
``controlnet_cond_embedding``, ``controlnet_down_blocks.0-8``,
``controlnet_mid_block``; transformer depths (1, 2, 10) per down block, 10 in the
middle); 1,251,014,160 parameters, 2.50 GB in fp16 like the official file.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from .sd15_layout import (
    UNET_PREFIX,
    VAE_PREFIX,
    UNetLayout,
    _clip_shapes,
    _conv,
    _dtype_of,
    _linear,
    _norm,
    _unet_transformer,
    _vae_shapes,
    _walk_unet,
    sd15_smoke_tensor,
    write_streamed_safetensors,
)

__all__ = [
    "SDXL_UNET",
    "CLIP_L_PREFIX",
    "CLIP_G_PREFIX",
    "IDENTITYNET_CONFIG",
    "sdxl_checkpoint_shapes",
    "sdxl_attn2_sites",
    "sdxl_param_count",
    "identitynet_shapes",
    "write_sdxl_smoke_checkpoint",
    "write_identitynet_smoke",
]

logger = logging.getLogger(__name__)

SDXL_UNET = UNetLayout(
    channel_mult=(1, 2, 4),
    attention_levels=(1, 2),
    context_dim=2048,
    num_heads=0,  # SDXL uses 64-channel heads; the key layout does not depend on them
    transformer_depth=(0, 2, 10),
    middle_depth=10,
    linear_projection=True,
    adm_in_channels=2816,
)
CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
CLIP_G_PREFIX = "conditioner.embedders.1.model."
_DTYPES = (torch.float8_e4m3fn, torch.float16, torch.bfloat16, torch.float32)

IDENTITYNET_CONFIG: dict = {
    "_class_name": "ControlNetModel",
    "_diffusers_version": "0.25.0",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "class_embed_type": None,
    "conditioning_channels": 3,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "global_pool_conditions": False,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_time_scale_shift": "default",
    "transformer_layers_per_block": [1, 2, 10],
    "upcast_attention": None,
    "use_linear_projection": True,
}
"""``ControlNetModel/config.json`` of an SDXL ControlNet such as the IdentityNet (diffusers field names)."""


def _clip_g_shapes() -> dict[str, tuple[int, ...]]:
    """OpenCLIP ViT-bigG/14 text tower as stored in SDXL checkpoints (fused attention ``in_proj``)."""
    width, layers, vocab, positions = 1280, 32, 49408, 77
    s: dict[str, tuple[int, ...]] = {
        "positional_embedding": (positions, width),
        "token_embedding.weight": (vocab, width),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        s[p + "attn.in_proj_weight"] = (3 * width, width)
        s[p + "attn.in_proj_bias"] = (3 * width,)
        _linear(s, p + "attn.out_proj", width, width)
        _norm(s, p + "ln_1", width)
        _linear(s, p + "mlp.c_fc", 4 * width, width)
        _linear(s, p + "mlp.c_proj", width, 4 * width)
        _norm(s, p + "ln_2", width)
    _norm(s, "ln_final", width)
    s["text_projection"] = (width, width)
    s["logit_scale"] = ()
    return s


def sdxl_checkpoint_shapes() -> dict[str, tuple[int, ...]]:
    """Every key and shape of the SDXL single-file checkpoint, in file order (UNet, VAE, CLIP-L, CLIP-G)."""
    unet: dict[str, tuple[int, ...]] = {}
    _walk_unet(SDXL_UNET, unet, None)
    out = {UNET_PREFIX + k: v for k, v in unet.items()}
    out.update({VAE_PREFIX + k: v for k, v in _vae_shapes().items()})
    out.update({CLIP_L_PREFIX + k: v for k, v in _clip_shapes().items()})
    out.update({CLIP_G_PREFIX + k: v for k, v in _clip_g_shapes().items()})
    return out


def sdxl_attn2_sites() -> dict[tuple[str, int, int], int]:
    """``{(block, number, index): inner width}`` of the 70 SDXL cross-attention sites, in UNet execution order."""
    sites: dict[tuple[str, int, int], int] = {}
    _walk_unet(SDXL_UNET, None, sites)
    return sites


def sdxl_param_count(prefix: str = UNET_PREFIX) -> int:
    """Number of elements over the checkpoint keys starting with ``prefix`` (default: the UNet)."""
    return sum(math.prod(shape) for key, shape in sdxl_checkpoint_shapes().items() if key.startswith(prefix))


def _tensor(shapes: dict[str, tuple[int, ...]], seed: int, dtype: torch.dtype):
    return lambda key: sd15_smoke_tensor(key, shapes, seed, dtype)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be float8_e4m3fn, float16, bfloat16 or float32, got {dtype}")


def write_sdxl_smoke_checkpoint(path: str | Path, seed: int = 0, dtype: torch.dtype = torch.float8_e4m3fn) -> Path:
    """Write the random-weight SDXL checkpoint that ComfyUI's ``CheckpointLoaderSimple`` loads as SDXL.

    Args:
        path: output ``.safetensors`` (written to ``<path>.tmp`` and renamed).
        seed: base seed; the same seed writes the same bytes.
        dtype: weight dtype (``position_ids`` stay int64); default fp8 e4m3, see the module docstring.
    """
    _check_dtype(dtype)
    shapes = sdxl_checkpoint_shapes()
    start = time.perf_counter()
    smoke = {"model": "sdxl", "seed": seed, "random_weights": True}
    path = write_streamed_safetensors(path, shapes, _tensor(shapes, seed, dtype), lambda k: _dtype_of(k, dtype), smoke)
    logger.info(
        "wrote SDXL smoke checkpoint %s (%.2f GB) in %.1f s",
        path,
        path.stat().st_size / 1e9,
        time.perf_counter() - start,
    )
    return path


def identitynet_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an SDXL ``ControlNetModel`` with :data:`IDENTITYNET_CONFIG` (diffusers names)."""
    cfg = IDENTITYNET_CONFIG
    s: dict[str, tuple[int, ...]] = {}
    widths, emb = cfg["block_out_channels"], 4 * cfg["block_out_channels"][0]
    _conv(s, "conv_in", widths[0], cfg["in_channels"], 3)
    _linear(s, "time_embedding.linear_1", emb, widths[0])
    _linear(s, "time_embedding.linear_2", emb, emb)
    _linear(s, "add_embedding.linear_1", emb, cfg["projection_class_embeddings_input_dim"])
    _linear(s, "add_embedding.linear_2", emb, emb)
    hint = cfg["conditioning_embedding_out_channels"]
    _conv(s, "controlnet_cond_embedding.conv_in", hint[0], cfg["conditioning_channels"], 3)
    for i in range(len(hint) - 1):
        _conv(s, f"controlnet_cond_embedding.blocks.{2 * i}", hint[i], hint[i], 3)
        _conv(s, f"controlnet_cond_embedding.blocks.{2 * i + 1}", hint[i + 1], hint[i], 3)
    _conv(s, "controlnet_cond_embedding.conv_out", widths[0], hint[-1], 3)
    zero_convs = [widths[0]]
    ch = widths[0]
    for level, width in enumerate(widths):
        depth = cfg["transformer_layers_per_block"][level]
        for j in range(cfg["layers_per_block"]):
            _diffusers_resnet(s, f"down_blocks.{level}.resnets.{j}.", ch, width, emb)
            ch = width
            if cfg["down_block_types"][level].startswith("CrossAttn"):
                _diffusers_transformer(s, f"down_blocks.{level}.attentions.{j}.", ch, cfg["cross_attention_dim"], depth)
            zero_convs.append(ch)
        if level != len(widths) - 1:
            _conv(s, f"down_blocks.{level}.downsamplers.0.conv", ch, ch, 3)
            zero_convs.append(ch)
    for i, width in enumerate(zero_convs):
        _conv(s, f"controlnet_down_blocks.{i}", width, width, 1)
    _diffusers_transformer(
        s, "mid_block.attentions.0.", ch, cfg["cross_attention_dim"], cfg["transformer_layers_per_block"][-1]
    )
    _diffusers_resnet(s, "mid_block.resnets.0.", ch, ch, emb)
    _diffusers_resnet(s, "mid_block.resnets.1.", ch, ch, emb)
    _conv(s, "controlnet_mid_block", ch, ch, 1)
    return s


def _diffusers_resnet(s: dict, p: str, c_in: int, c_out: int, emb: int) -> None:
    _norm(s, p + "norm1", c_in)
    _conv(s, p + "conv1", c_out, c_in, 3)
    _linear(s, p + "time_emb_proj", c_out, emb)
    _norm(s, p + "norm2", c_out)
    _conv(s, p + "conv2", c_out, c_out, 3)
    if c_in != c_out:
        _conv(s, p + "conv_shortcut", c_out, c_in, 1)


def _diffusers_transformer(s: dict, p: str, c: int, context_dim: int, depth: int) -> None:
    """A diffusers ``Transformer2DModel`` with Linear projections: the LDM layout's keys under the same names."""
    _unet_transformer(s, p, c, context_dim, depth, linear=True)


def write_identitynet_smoke(folder: str | Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``diffusion_pytorch_model.safetensors`` + ``config.json`` (the ``ControlNetModel/`` folder).

    Returns:
        The weights file (ComfyUI's ControlNet loader reads it and infers the config from its keys).
    """
    _check_dtype(dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(IDENTITYNET_CONFIG, indent=2) + "\n")
    shapes = identitynet_shapes()
    smoke = {"model": "identitynet", "seed": seed, "random_weights": True}
    path = folder / "diffusion_pytorch_model.safetensors"
    return write_streamed_safetensors(path, shapes, _tensor(shapes, seed, dtype), lambda k: dtype, smoke)
