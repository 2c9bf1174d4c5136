"""Shared plumbing for installing adapter processors on a diffusers ``UNet2DConditionModel``.

diffusers is duck-typed (``unet.attn_processors``, ``set_attn_processor``,
``get_submodule``) and imported lazily only to restore stock processors, so
``models/`` imports without it. Every adapter's explicit site table is checked
against ``unet.attn_processors`` order before anything is installed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError
from .sites import AttnSite

__all__ = [
    "PROCESSOR_SUFFIX",
    "scale_for",
    "own_copy",
    "locate_sites",
    "remove_processors",
    "text_cross_attention",
    "fit_tokens",
]

PROCESSOR_SUFFIX = ".processor"


def scale_for(scale: float | Mapping[int, float], index: int) -> float:
    """The scale of site ``index``: one number for all sites, or a ``{site index: scale}`` mapping."""
    if isinstance(scale, Mapping):
        if index not in scale:
            raise InputError(f"The per-site scale has no entry for site {index}; given: {sorted(scale)}.")
        return float(scale[index])
    return float(scale)


def own_copy(module: nn.Module, ref: torch.Tensor) -> nn.Module:
    """A copy of an adapter's ``module`` in ``ref``'s device and dtype, for a processor to own.

    Never the adapter's module itself: ``unet.to(dtype)`` converts the processors and must not
    change the adapter, which other hosts (or a later reinstall) still use.
    """
    return copy.deepcopy(module).to(device=ref.device, dtype=ref.dtype)


def locate_sites(
    unet: nn.Module, sites: Sequence[AttnSite], *, what: str, source: str, trained_for: str
) -> dict[int, tuple[AttnSite, nn.Module]]:
    """``{site index: (site, host attention module)}`` after checking the table against the UNet.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        sites: the adapter's explicit site table.
        what: the adapter's kind (e.g. ``"W+ adapter"``), for messages.
        source: the adapter's name or file, for messages.
        trained_for: the architecture the adapter fits (e.g. ``"SD1.5"``), for messages.

    Raises:
        CheckpointError: an attn2 layer has no weights, a site's processor index names
            another module, or a layer's width differs from the table's.
    """
    names = list(unet.attn_processors)
    attn2 = [n for n in names if n.endswith("attn2" + PROCESSOR_SUFFIX)]
    site_names = {s.diffusers_name for s in sites}
    unweighted = [n for n in attn2 if n not in site_names]
    if unweighted:
        raise CheckpointError(
            f"{source} has no weights for {len(unweighted)} cross-attention layers of this UNet "
            f"(first: {unweighted[0]}); it has {len(sites)} sites, the UNet {len(attn2)}. The UNet is not the "
            f"architecture the adapter was trained for ({trained_for})."
        )
    found: dict[int, tuple[AttnSite, nn.Module]] = {}
    for site in sites:
        actual = names[site.index] if site.index < len(names) else None
        if actual != site.diffusers_name:
            raise CheckpointError(
                f"{source}: site {site.index} is {site.diffusers_name} but processor {site.index} of this UNet is "
                f"{actual} ({len(names)} processors). The UNet is not the architecture the adapter was trained for "
                f"({trained_for})."
            )
        attn = unet.get_submodule(site.diffusers_name[: -len(PROCESSOR_SUFFIX)])
        hidden = int(attn.to_q.weight.shape[0])
        if hidden != site.hidden_size:
            raise CheckpointError(
                f"{site.diffusers_name} has width {hidden} but {what} site {site.index} expects {site.hidden_size} "
                f"({source})."
            )
        found[site.index] = (site, attn)
    return found


def remove_processors(unet: nn.Module, kind: type) -> int:
    """Replace every processor of type ``kind`` with diffusers' stock ``AttnProcessor2_0``; returns how many."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = dict(unet.attn_processors)
    count = 0
    for name, proc in processors.items():
        if isinstance(proc, kind):
            processors[name] = AttnProcessor2_0()
            count += 1
    unet.set_attn_processor(processors)
    return count


def text_cross_attention(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    text: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The stock cross-attention of a diffusers ``Attention`` up to ``to_out`` (ops of ``AttnProcessor2_0``).

    Adapter processors add their branches to the returned ``h_t`` and pass the sum to ``finish``.

    Args:
        attn: the host diffusers ``Attention``.
        hidden_states: ``[B, N, query_dim]`` or ``[B, C, H, W]``.
        text: ``[B, L, ctx]`` the text part of the context.
        attention_mask: optional mask over the text tokens.
        temb: for spatial-norm layers.

    Returns:
        ``(h_t, q, finish)``: the text attention ``[B, N, C]`` and the layer's query ``to_q(x)``
        ``[B, N, C]`` (after ``norm_q``), heads merged; ``finish(h)`` applies ``to_out``, the
        input layout, the residual connection and the output rescale.
    """
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size = text.shape[0]
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, text.shape[1], batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if attn.norm_cross:
        text = attn.norm_encoder_hidden_states(text)
    key, value = attn.to_k(text), attn.to_v(text)
    head_dim = key.shape[-1] // attn.heads
    qh, kh, vh = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    if attn.norm_q is not None:
        qh = attn.norm_q(qh)
    if attn.norm_k is not None:
        kh = attn.norm_k(kh)
    h_t = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
    h_t = h_t.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
    q = qh.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)

    def finish(h: torch.Tensor) -> torch.Tensor:
        out = attn.to_out[1](attn.to_out[0](h))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    return h_t, q, finish


def fit_tokens(tokens: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Adapter tokens ``[B or 1, T, ctx]`` in ``like``'s dtype/device and batch, for a ``[text | tokens]`` context."""
    batch = like.shape[0]
    tokens = tokens.to(device=like.device, dtype=like.dtype)
    if tokens.shape[0] == 1 and batch != 1:
        tokens = tokens.expand(batch, -1, -1)
    if tokens.shape[0] != batch or tokens.shape[-1] != like.shape[-1]:
        raise InputError(
            f"{name} tokens {tuple(tokens.shape)} do not fit text embeddings {tuple(like.shape)}: give one token set "
            "per prompt (or one for all) of the same width"
        )
    return tokens
