"""Explicit site table of the W+ adapter: checkpoint index -> diffusers module -> ComfyUI key.

The official checkpoint keys its per-layer weights by the position of the
processor in ``unet.attn_processors`` (diffusers order; attn1 at even, attn2
at odd positions). The table below pins that mapping down instead of
counting positions at run time, and a reference test checks it
against ``manifests/diffusers_attn_index_sd15.json``.

ComfyUI keys are ``(block, number, index_inside_the_SpatialTransformer)``,
the middle block being ``("middle", 0, 0)`` (docs/design.md, "Patching").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WPlusSite", "SD15_WPLUS_SITES", "SD15_CONTEXT_DIM"]

SD15_CONTEXT_DIM = 768
"""CLIP-L text width: the context width of every SD1.5 cross-attention."""


@dataclass(frozen=True)
class WPlusSite:
    """One cross-attention (attn2) site that carries W+ adapter weights.

    Attributes:
        index: processor index in ``unet.attn_processors`` order; the key prefix
            in the checkpoint (``wplus_adapter.{index}.to_k_wplus.weight``).
        diffusers_name: the processor's name in ``unet.attn_processors``.
        comfy_key: ComfyUI ``patches_replace["attn2"]`` key ``(block, number, index)``.
        hidden_size: the layer's inner width C (= to_q out features), channels.
        heads: attention heads of the host layer (head_dim = hidden_size / heads).
    """

    index: int
    diffusers_name: str
    comfy_key: tuple[str, int, int]
    hidden_size: int
    heads: int = 8


def _site(index: int, name: str, block: str, number: int, hidden: int) -> WPlusSite:
    return WPlusSite(index, f"{name}.transformer_blocks.0.attn2.processor", (block, number, 0), hidden)


SD15_WPLUS_SITES: tuple[WPlusSite, ...] = (
    _site(1, "down_blocks.0.attentions.0", "input", 1, 320),
    _site(3, "down_blocks.0.attentions.1", "input", 2, 320),
    _site(5, "down_blocks.1.attentions.0", "input", 4, 640),
    _site(7, "down_blocks.1.attentions.1", "input", 5, 640),
    _site(9, "down_blocks.2.attentions.0", "input", 7, 1280),
    _site(11, "down_blocks.2.attentions.1", "input", 8, 1280),
    _site(13, "up_blocks.1.attentions.0", "output", 3, 1280),
    _site(15, "up_blocks.1.attentions.1", "output", 4, 1280),
    _site(17, "up_blocks.1.attentions.2", "output", 5, 1280),
    _site(19, "up_blocks.2.attentions.0", "output", 6, 640),
    _site(21, "up_blocks.2.attentions.1", "output", 7, 640),
    _site(23, "up_blocks.2.attentions.2", "output", 8, 640),
    _site(25, "up_blocks.3.attentions.0", "output", 9, 320),
    _site(27, "up_blocks.3.attentions.1", "output", 10, 320),
    _site(29, "up_blocks.3.attentions.2", "output", 11, 320),
    _site(31, "mid_block.attentions.0", "middle", 0, 1280),
)
"""The 16 attn2 sites of SD1.5, in checkpoint order; 8 heads everywhere."""
