"""Install InstantID / PSTF-AttControl on a diffusers SDXL ``UNet2DConditionModel`` (reference host, tests, training).

The processors share the adapter's Linear modules (no copy when dtype and device
already match), so a trainer may install them and optimise
``adapter.image_style_proj`` and the ``to_k_style``/``to_v_style`` weights in place.
The site table is checked against ``unet.attn_processors`` order first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..attention.diffusers_host import fit_tokens, locate_sites, own_copy, remove_processors, scale_for
from .model import PSTFAdapter, load_pstf_adapter
from .processor import TripletAttnProcessor

__all__ = ["apply_pstf_to_unet", "set_pstf_scale", "remove_pstf", "encode_context"]

logger = logging.getLogger(__name__)

NUM_TOKENS = 16


def apply_pstf_to_unet(
    unet: nn.Module,
    adapter_or_path: PSTFAdapter | str | Path,
    scale: float | Mapping[int, float] = 1.0,
    scale_style: float | Mapping[int, float] = 1.0,
) -> dict[int, TripletAttnProcessor]:
    """Put a :class:`TripletAttnProcessor` on every attn2 site of an SDXL ``unet``; attn1 keeps its processor.

    The UNet must then be called with ``encoder_hidden_states`` from :func:`encode_context`
    (``[text | 16 ID tokens | 16 W+ tokens]``, or ``[text | 16 ID tokens]`` for InstantID).

    Args:
        unet: a diffusers SDXL ``UNet2DConditionModel``.
        adapter_or_path: a loaded :class:`~.model.PSTFAdapter` or a file path.
        scale: identity scale for every site, or ``{site index: scale}``.
        scale_style: W+ scale (ignored for InstantID files), same forms.

    Returns:
        ``{site index: processor}``.

    Raises:
        CheckpointError: the site table does not match this UNet (not SDXL), or its
            context width is not 2048.
    """
    adapter = adapter_or_path if isinstance(adapter_or_path, PSTFAdapter) else load_pstf_adapter(adapter_or_path)
    source = adapter.source or f"the {adapter.kind} adapter"
    located = locate_sites(unet, adapter.sites, what=adapter.kind, source=source, trained_for="SDXL")
    processors = dict(unet.attn_processors)
    installed: dict[int, TripletAttnProcessor] = {}
    for index, (site, attn) in located.items():
        hidden, ctx = int(attn.to_q.weight.shape[0]), int(attn.to_k.weight.shape[1])
        adapter.check_context_dim(ctx, model_name=f"the UNet ({site.diffusers_name})")
        proc = TripletAttnProcessor(
            hidden,
            ctx,
            scale=scale_for(scale, index),
            scale_style=scale_for(scale_style, index),
            num_tokens=NUM_TOKENS,
            style=adapter.has_style,
        )
        layer, ref = adapter.layer(site), attn.to_q.weight
        for name in ("to_k_ip", "to_v_ip", "to_k_style", "to_v_style") if adapter.has_style else ("to_k_ip", "to_v_ip"):
            setattr(proc, name, own_copy(getattr(layer, name), ref))
        processors[site.diffusers_name] = proc
        installed[index] = proc
    unet.set_attn_processor(processors)
    logger.info("%s: installed %d processors (scale %s, style %s)", adapter.kind, len(installed), scale, scale_style)
    return installed


def set_pstf_scale(
    unet: nn.Module,
    scale: float | Mapping[int, float] | None = None,
    scale_style: float | Mapping[int, float] | None = None,
) -> int:
    """Set the identity and/or W+ scale on every installed processor (by processor index); returns how many."""
    count = 0
    for index, proc in enumerate(unet.attn_processors.values()):
        if isinstance(proc, TripletAttnProcessor):
            if scale is not None:
                proc.scale = scale_for(scale, index)
            if scale_style is not None:
                proc.scale_style = scale_for(scale_style, index)
            count += 1
    return count


def remove_pstf(unet: nn.Module) -> int:
    """Restore diffusers' stock processors where :class:`TripletAttnProcessor` sits; returns how many."""
    return remove_processors(unet, TripletAttnProcessor)


def encode_context(
    text_embeds: torch.Tensor, id_tokens: torch.Tensor, wplus_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """UNet context ``[text | ID tokens | W+ tokens]`` (or ``[text | ID tokens]`` for InstantID).

    Args:
        text_embeds: ``[B, 77, 2048]`` SDXL text encoder output.
        id_tokens: ``[B or 1, 16, 2048]`` from ``adapter.id_tokens`` (uncond half: ``adapter.uncond_id_tokens()``).
        wplus_tokens: ``[B or 1, 16, 2048]`` from ``adapter.wplus_tokens`` / ``uncond_wplus_tokens``, or None.

    Returns:
        ``[B, 77 + 16 (+ 16), 2048]`` in ``text_embeds``' dtype and device.
    """
    parts = [text_embeds, fit_tokens(id_tokens, text_embeds, "ID")]
    if wplus_tokens is not None:
        parts.append(fit_tokens(wplus_tokens, text_embeds, "W+"))
    return torch.cat(parts, dim=1)
