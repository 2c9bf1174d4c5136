"""Explicit site table of InstantID / PSTF-AttControl on SDXL: checkpoint index -> diffusers module -> ComfyUI key.

``ip-adapter.bin`` (InstantID) and PSTF's ``pytorch_model.bin`` key their
per-layer weights ``ip_adapter.{index}.*`` by the position of the processor in
diffusers' ``unet.attn_processors`` of the SDXL UNet: attn1 at even, attn2 at
odd positions, down blocks first, then the up blocks, then the middle block
(diffusers registers ``mid_block`` after ``up_blocks``). The 70 sites are
pinned down below from the SpatialTransformers of SDXL (block, depth, width);
a reference test checks the table against ``manifests/diffusers_attn_index_sdxl.json``.

ComfyUI keys are ``(block, number, index inside the SpatialTransformer)``. The
middle block is ``("middle", 0, i)``: a popular InstantID port registers
``("middle", 1, i)``, which ComfyUI never looks up, so its 10 middle sites are
dead. Heads: SDXL uses 64-channel heads (10 at width 640, 20 at 1280).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..attention.sites import AttnSite

__all__ = ["SDXL_CONTEXT_DIM", "SDXL_HEAD_DIM", "SDXL_SITES", "SDXL_TRANSFORMERS", "site_table"]

SDXL_CONTEXT_DIM = 2048
"""CLIP-L (768) + OpenCLIP bigG (1280) text width: the context width of every SDXL cross-attention."""
SDXL_HEAD_DIM = 64

SDXL_TRANSFORMERS: tuple[tuple[str, tuple[str, int], int, int], ...] = (
    ("down_blocks.1.attentions.0", ("input", 4), 2, 640),
    ("down_blocks.1.attentions.1", ("input", 5), 2, 640),
    ("down_blocks.2.attentions.0", ("input", 7), 10, 1280),
    ("down_blocks.2.attentions.1", ("input", 8), 10, 1280),
    ("up_blocks.0.attentions.0", ("output", 0), 10, 1280),
    ("up_blocks.0.attentions.1", ("output", 1), 10, 1280),
    ("up_blocks.0.attentions.2", ("output", 2), 10, 1280),
    ("up_blocks.1.attentions.0", ("output", 3), 2, 640),
    ("up_blocks.1.attentions.1", ("output", 4), 2, 640),
    ("up_blocks.1.attentions.2", ("output", 5), 2, 640),
    ("mid_block.attentions.0", ("middle", 0), 10, 1280),
)
"""The 11 SpatialTransformers of SDXL in diffusers processor order: (diffusers name, ComfyUI block, depth, width)."""


def site_table(
    transformers: Sequence[tuple[str, tuple[str, int], int, int]] = SDXL_TRANSFORMERS, head_dim: int = SDXL_HEAD_DIM
) -> tuple[AttnSite, ...]:
    """The attn2 sites of a UNet whose only attention processors are these transformers' blocks.

    Args:
        transformers: ``(diffusers name, (ComfyUI block, number), depth, width)`` in diffusers
            processor order (down blocks, up blocks, middle block).
        head_dim: channels per head.

    Returns:
        Sites with indices 1, 3, 5, ... (each transformer block holds attn1 then attn2).
    """
    sites = []
    index = 1
    for name, (block, number), depth, width in transformers:
        for i in range(depth):
            diffusers_name = f"{name}.transformer_blocks.{i}.attn2.processor"
            sites.append(AttnSite(index, diffusers_name, (block, number, i), width, width // head_dim))
            index += 2
    return tuple(sites)


SDXL_SITES: tuple[AttnSite, ...] = site_table()
"""The 70 attn2 sites of SDXL in checkpoint order (indices 1, 3, ..., 139); middle block last."""
