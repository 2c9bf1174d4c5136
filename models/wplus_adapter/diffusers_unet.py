"""Install the W+ adapter on a diffusers ``UNet2DConditionModel`` (reference host, tests, benchmarks).

diffusers is duck-typed here and imported lazily only by
:func:`remove_wplus_adapter`, so ``models/`` imports without it.
The processor-index -> module-name mapping comes from the adapter's explicit
site table (:mod:`.sites`) and is checked against
``unet.attn_processors`` order before anything is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..attention.diffusers_host import fit_tokens, locate_sites, own_copy, remove_processors, scale_for
from .model import WPlusAdapter, load_wplus_adapter
from .processor import WPlusAttnProcessor

__all__ = ["apply_wplus_adapter_to_unet", "set_wplus_scale", "remove_wplus_adapter", "encode_context"]

logger = logging.getLogger(__name__)


def apply_wplus_adapter_to_unet(
    unet: nn.Module,
    adapter_or_path: WPlusAdapter | str | Path,
    scale: float | Mapping[int, float] = 1.0,
) -> dict[int, WPlusAttnProcessor]:
    """Put a :class:`WPlusAttnProcessor` on every attn2 site of ``unet``; attn1 keeps its processor.

    The UNet must then be called with ``encoder_hidden_states`` =
    ``[text | 4 W+ tokens]`` (:func:`encode_context`).

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        adapter_or_path: a loaded :class:`WPlusAdapter` or a checkpoint path.
        scale: λ for every site, or ``{site index: λ}`` for all sites.

    Returns:
        ``{site index: processor}``. Each processor owns a copy of its site's
        weights in the dtype and device of the UNet's ``to_q`` (moving or
        casting the UNet later never touches the adapter).

    Raises:
        CheckpointError: the adapter's site table does not match this UNet
            (other architecture, different context width, an attn2 layer
            without weights, a width mismatch).
    """
    adapter = adapter_or_path if isinstance(adapter_or_path, WPlusAdapter) else load_wplus_adapter(adapter_or_path)
    source = adapter.source or "the W+ adapter"
    located = locate_sites(unet, adapter.sites, what="W+ adapter", source=source, trained_for="SD1.5")
    processors = dict(unet.attn_processors)
    installed: dict[int, WPlusAttnProcessor] = {}
    for index, (site, attn) in located.items():
        hidden, ctx = int(attn.to_q.weight.shape[0]), int(attn.to_k.weight.shape[1])
        adapter.check_context_dim(ctx, model_name=f"the UNet ({site.diffusers_name})")
        layer = adapter.layer(site)
        proc = WPlusAttnProcessor(hidden, ctx, scale=scale_for(scale, index), num_tokens=4)
        ref = attn.to_q.weight
        proc.to_k_wplus = own_copy(layer.to_k_wplus, ref)
        proc.to_v_wplus = own_copy(layer.to_v_wplus, ref)
        proc.to_q_wplus = own_copy(layer.to_q_wplus, ref)
        processors[site.diffusers_name] = proc
        installed[index] = proc
    unet.set_attn_processor(processors)
    logger.info("W+ adapter: installed %d processors (scale %s)", len(installed), scale)
    return installed


def set_wplus_scale(unet: nn.Module, scale: float | Mapping[int, float]) -> int:
    """Set λ on every installed :class:`WPlusAttnProcessor` (by processor index); returns how many."""
    count = 0
    for index, proc in enumerate(unet.attn_processors.values()):
        if isinstance(proc, WPlusAttnProcessor):
            proc.scale = scale_for(scale, index)
            count += 1
    return count


def remove_wplus_adapter(unet: nn.Module) -> int:
    """Replace every :class:`WPlusAttnProcessor` with diffusers' stock ``AttnProcessor2_0``; returns how many."""
    return remove_processors(unet, WPlusAttnProcessor)


def encode_context(text_embeds: torch.Tensor, wplus: torch.Tensor | None, adapter: WPlusAdapter) -> torch.Tensor:
    """UNet context ``[text | WProj(W)]`` (uncond half: ``wplus=None`` or zeros -> ``WProj(0)``).

    Args:
        text_embeds: ``[B, L, ctx]`` text encoder output (L = 77 for SD1.5).
        wplus: absolute W+ ``[B or 1, 18, 512]``, or None for the uncond tokens.
        adapter: supplies ``w_proj``.

    Returns:
        ``[B, L + 4, ctx]`` in ``text_embeds``' dtype and device.
    """
    tokens = adapter.uncond_tokens(1) if wplus is None else adapter.tokens(wplus)
    return torch.cat([text_embeds, fit_tokens(tokens, text_embeds, "W+")], dim=1)
