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

from ..errors import CheckpointError, InputError
from .model import WPlusAdapter, load_wplus_adapter
from .processor import WPlusAttnProcessor, WPlusSiteLayer

__all__ = ["apply_wplus_adapter_to_unet", "set_wplus_scale", "remove_wplus_adapter", "encode_context"]

logger = logging.getLogger(__name__)

_SUFFIX = ".processor"


def _scale_for(scale: float | Mapping[int, float], index: int) -> float:
    if isinstance(scale, Mapping):
        if index not in scale:
            raise InputError(f"The per-site scale has no entry for site {index}; given: {sorted(scale)}.")
        return float(scale[index])
    return float(scale)


def _processor(layer: WPlusSiteLayer, scale: float, ref: torch.Tensor) -> WPlusAttnProcessor:
    """A processor holding its own copy of ``layer``'s weights in ``ref``'s device and dtype.

    A copy, never the adapter's modules: ``unet.to(dtype)`` converts the processors and must not
    change the adapter, which other hosts (or a later reinstall) still use.
    """
    with torch.device("meta"):
        proc = WPlusAttnProcessor(layer.hidden_size, layer.cross_attention_dim, scale=scale, num_tokens=4)
    own = {k: v.detach().to(device=ref.device, dtype=ref.dtype, copy=True) for k, v in layer.state_dict().items()}
    proc.load_state_dict(own, strict=True, assign=True)
    return proc


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
    processors = dict(unet.attn_processors)
    names = list(processors)
    source = adapter.source or "the W+ adapter"
    site_names = {s.diffusers_name for s in adapter.sites}
    unweighted = [n for n in names if n.endswith("attn2" + _SUFFIX) and n not in site_names]
    if unweighted:
        raise CheckpointError(
            f"{source} has no weights for {len(unweighted)} cross-attention layers of this UNet "
            f"(first: {unweighted[0]}); it has {len(adapter.sites)} sites, the UNet "
            f"{sum(n.endswith('attn2' + _SUFFIX) for n in names)}. The UNet is not the architecture the adapter was "
            "trained for (SD1.5)."
        )
    installed: dict[int, WPlusAttnProcessor] = {}
    for site in adapter.sites:
        actual = names[site.index] if site.index < len(names) else None
        if actual != site.diffusers_name:
            raise CheckpointError(
                f"W+ adapter site {site.index} is {site.diffusers_name} but processor {site.index} of this UNet is "
                f"{actual} ({len(names)} processors). The UNet is not the architecture the adapter was trained for."
            )
        attn = unet.get_submodule(site.diffusers_name[: -len(_SUFFIX)])
        hidden, ctx = int(attn.to_q.weight.shape[0]), int(attn.to_k.weight.shape[1])
        adapter.check_context_dim(ctx, model_name=f"the UNet ({site.diffusers_name})")
        if hidden != site.hidden_size:
            raise CheckpointError(
                f"{site.diffusers_name} has width {hidden} but W+ adapter site {site.index} expects {site.hidden_size}."
            )
        proc = _processor(adapter.layer(site), _scale_for(scale, site.index), attn.to_q.weight)
        processors[site.diffusers_name] = proc
        installed[site.index] = proc
    unet.set_attn_processor(processors)
    logger.info("W+ adapter: installed %d processors (scale %s)", len(installed), scale)
    return installed


def set_wplus_scale(unet: nn.Module, scale: float | Mapping[int, float]) -> int:
    """Set λ on every installed :class:`WPlusAttnProcessor` (by processor index); returns how many."""
    count = 0
    for index, proc in enumerate(unet.attn_processors.values()):
        if isinstance(proc, WPlusAttnProcessor):
            proc.scale = _scale_for(scale, index)
            count += 1
    return count


def remove_wplus_adapter(unet: nn.Module) -> int:
    """Replace every :class:`WPlusAttnProcessor` with diffusers' stock ``AttnProcessor2_0``; returns how many."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = dict(unet.attn_processors)
    count = 0
    for name, proc in processors.items():
        if isinstance(proc, WPlusAttnProcessor):
            processors[name] = AttnProcessor2_0()
            count += 1
    unet.set_attn_processor(processors)
    return count


def encode_context(text_embeds: torch.Tensor, wplus: torch.Tensor | None, adapter: WPlusAdapter) -> torch.Tensor:
    """UNet context ``[text | WProj(W)]`` (uncond half: ``wplus=None`` or zeros -> ``WProj(0)``).

    Args:
        text_embeds: ``[B, L, ctx]`` text encoder output (L = 77 for SD1.5).
        wplus: absolute W+ ``[B or 1, 18, 512]``, or None for the uncond tokens.
        adapter: supplies ``w_proj``.

    Returns:
        ``[B, L + 4, ctx]`` in ``text_embeds``' dtype and device.
    """
    batch = text_embeds.shape[0]
    tokens = adapter.uncond_tokens(1) if wplus is None else adapter.tokens(wplus)
    tokens = tokens.to(device=text_embeds.device, dtype=text_embeds.dtype)
    if tokens.shape[0] == 1 and batch != 1:
        tokens = tokens.expand(batch, -1, -1)
    if tokens.shape[0] != batch or tokens.shape[-1] != text_embeds.shape[-1]:
        raise InputError(
            f"W+ tokens {tuple(tokens.shape)} do not fit text embeddings {tuple(text_embeds.shape)}: "
            "give one W+ code per prompt (or one for all) and an adapter of the same context width"
        )
    return torch.cat([text_embeds, tokens], dim=1)
