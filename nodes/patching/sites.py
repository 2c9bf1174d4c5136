"""Cross-attention sites of a ComfyUI UNet and helpers shared by every attn2 replace."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_patcher
import torch
from comfy.ldm.modules.attention import BasicTransformerBlock, optimized_attention

__all__ = ["SiteKey", "attn2_modules", "discover_attn2_sites", "host_attention", "existing_attn2_replaces"]

SiteKey = tuple[str, int, int]
"""ComfyUI's attn2 key ``(block, number, index inside the SpatialTransformer)``; middle = ``("middle", 0, i)``."""


def discover_attn2_sites(model: comfy.model_patcher.ModelPatcher) -> dict[SiteKey, tuple[int, int]]:
    """``{(block, number, index): (context width, inner width)}`` of every cross-attention in the UNet.

    The context width is ``attn2.to_k``'s input, the inner width ``attn2.to_q``'s output.
    """
    return {
        key: (int(attn.to_k.weight.shape[1]), int(attn.to_q.weight.shape[0]))
        for key, attn in attn2_modules(model).items()
    }


def attn2_modules(model: comfy.model_patcher.ModelPatcher) -> dict[SiteKey, torch.nn.Module]:
    """``{(block, number, index): attn2}``: the cross-attention module of every site (read, never modified).

    Walks the diffusion model's modules in ComfyUI's own naming
    (``input_blocks.N.1.transformer_blocks.I``, ``middle_block.1...``,
    ``output_blocks.N.1...``).
    """
    unet = model.get_model_object("diffusion_model")
    sites: dict[SiteKey, torch.nn.Module] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, BasicTransformerBlock) or getattr(module, "attn2", None) is None:
            continue
        parts = name.split(".")
        if parts[0] == "input_blocks":
            block, number = "input", int(parts[1])
        elif parts[0] == "output_blocks":
            block, number = "output", int(parts[1])
        elif parts[0] == "middle_block":
            block, number = "middle", 0
        else:
            continue
        index = int(parts[parts.index("transformer_blocks") + 1])
        sites[(block, number, index)] = module.attn2
    return sites


def host_attention(extra_options: dict) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``fn(q, k, v, heads)``: ComfyUI's ``optimized_attention`` with this call's precision and options.

    Patches call it so the attention backend the user chose is honoured.
    """

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        return optimized_attention(
            q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options
        )

    return attention


def existing_attn2_replaces(model: comfy.model_patcher.ModelPatcher) -> dict:
    """The attn2 replaces already on ``model`` (looked up, never mutated), keyed as ComfyUI stores them."""
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
