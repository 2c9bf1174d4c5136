"""Attention maths shared by every host: the diffusers processor and the ComfyUI patch.

Only pure tensor functions live here. The W+ adapter's residual branch
(methods.md §3.3) is :func:`residual_wplus_attention`; both the diffusers
:class:`~.wplus_adapter.WPlusAttnProcessor` and the ComfyUI attn2 replace call
it, so the two integrations cannot drift apart.

Shape convention (as ComfyUI's ``optimized_attention``): attention inputs and
outputs are ``[B, L, heads * head_dim]`` with heads merged in the last
dimension; the head split happens inside the attention function.

Use from a ComfyUI attn2 replace at site ``key`` (sketch; see comfyui.md §3)::

    site = adapter.site_for_comfy_key(key)             # (block, number, block_index)
    layer = adapter.layer(site)                        # to_q/k/v_wplus
    h_t = optimized_attention(q, k, v, n_heads)        # or the replace already on this key
    tokens = tokens_for_chunks(cond_tokens, uncond_tokens, extra_options["cond_or_uncond"], q.shape[0])
    k_w, v_w = layer.project_tokens(tokens)            # cacheable per token set
    return residual_wplus_attention(h_t, k_w, v_w, layer.to_q_wplus, n_heads, scale, optimized_attention)
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentionFn", "sdpa_attention", "residual_wplus_attention"]

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
"""``fn(q, k, v, heads) -> out``; q ``[B,N,C]``, k/v ``[B,T,C]``, out ``[B,N,C]``."""


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled-dot-product attention with heads merged in the last dim.

    Same contract as ComfyUI's ``optimized_attention(q, k, v, heads)``: softmax
    scale ``1/sqrt(head_dim)``, no mask, no dropout.

    Args:
        q: ``[B, N, C]`` queries, ``C = heads * head_dim``.
        k: ``[B, T, C]`` keys.
        v: ``[B, T, C]`` values.
        heads: number of heads; must divide ``C``.

    Returns:
        ``[B, N, C]`` in ``q.dtype``.
    """
    batch, _, channels = q.shape
    if channels % heads != 0:
        raise ValueError(f"attention width {channels} is not divisible by heads={heads}")
    head_dim = channels // heads
    qh = q.view(batch, -1, heads, head_dim).transpose(1, 2)
    kh = k.view(batch, -1, heads, head_dim).transpose(1, 2)
    vh = v.view(batch, -1, heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=None, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(q.dtype)


def _project(proj: nn.Module | Callable[[torch.Tensor], torch.Tensor] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a bias-free projection (a Linear, any callable, or a ``[C_out, C_in]`` weight) to ``x``.

    A Linear or weight whose dtype/device differs from ``x`` is cast per call
    (as ComfyUI's ``manual_cast`` does); move the weights once to avoid the copy.
    """
    if isinstance(proj, torch.Tensor):
        weight, bias = proj, None
    elif isinstance(proj, nn.Linear):
        weight, bias = proj.weight, proj.bias
    else:
        return proj(x)
    if weight.dtype != x.dtype or weight.device != x.device:
        weight = weight.to(device=x.device, dtype=x.dtype)
        bias = None if bias is None else bias.to(device=x.device, dtype=x.dtype)
    return F.linear(x, weight, bias)


def _match_batch(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if t.ndim != 3:
        raise ValueError(f"{name} must be [B, T, C], got shape {tuple(t.shape)}")
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, -1, -1)
    raise ValueError(
        f"{name} has batch {t.shape[0]} but the attention batch is {batch}; "
        "give one token set per batch entry (or a single one to share)"
    )


def residual_wplus_attention(
    h_t: torch.Tensor,
    w_tokens_k: torch.Tensor,
    w_tokens_v: torch.Tensor,
    to_q_wplus: nn.Module | Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
    heads: int,
    scale: float | torch.Tensor,
    attention_fn: AttentionFn | None = None,
) -> torch.Tensor:
    """The W+ adapter's residual cross-attention: ``h_t + scale * MHA(to_q_wplus(h_t), k_w, v_w)``.

    ``h_t`` is the host layer's text cross-attention output **before** ``to_out``
    (what a ComfyUI attn2 replace returns). The W+ query is computed from
    ``h_t``, not from the block input: that is what makes the branch "residual"
    (methods.md §3.3). The caller applies ``to_out`` afterwards.

    Args:
        h_t: ``[B, N, C]`` text attention output, heads merged; ``C`` is the
            layer's inner width (320/640/1280 for SD1.5).
        w_tokens_k: ``[B, T, C]`` or ``[1, T, C]`` W+ keys, already projected by
            the site's ``to_k_wplus`` (``T = 4``); batch 1 is shared by all rows.
        w_tokens_v: ``[B, T, C]`` or ``[1, T, C]`` W+ values (``to_v_wplus``).
        to_q_wplus: the site's bias-free ``Linear(C, C)`` (or a callable, or its
            ``[C, C]`` weight).
        heads: the host layer's head count (8 for SD1.5); head_dim = C / heads.
        scale: λ (``residual_att_scale``). A Python number ``0`` returns ``h_t``
            itself without any work. A tensor broadcastable to ``[B, 1, 1]``
            gives a per-row λ (e.g. 0 for rows outside a sigma window); a
            tensor is never short-cut.
        attention_fn: ``fn(q, k, v, heads) -> [B, N, C]`` with heads merged
            (ComfyUI passes ``optimized_attention``); default :func:`sdpa_attention`.
            Softmax scale 1/sqrt(head_dim), no mask.

    Returns:
        ``[B, N, C]`` in ``h_t.dtype``.
    """
    if isinstance(scale, Real) and not isinstance(scale, bool) and float(scale) == 0.0:
        return h_t
    if h_t.ndim != 3:
        raise ValueError(f"h_t must be [B, N, C], got shape {tuple(h_t.shape)}")
    batch, _, channels = h_t.shape
    k = _match_batch(w_tokens_k, batch, "w_tokens_k").to(h_t.dtype)
    v = _match_batch(w_tokens_v, batch, "w_tokens_v").to(h_t.dtype)
    if k.shape[-1] != channels or v.shape[-1] != channels:
        raise ValueError(
            f"W+ keys/values have width {k.shape[-1]}/{v.shape[-1]} but the layer width is {channels}: "
            "the adapter weights do not belong to this attention site"
        )
    q = _project(to_q_wplus, h_t)
    fn = sdpa_attention if attention_fn is None else attention_fn
    h_w = fn(q, k, v, heads).to(h_t.dtype)
    if isinstance(scale, torch.Tensor):
        lam = scale.to(device=h_t.device, dtype=h_t.dtype)
        if lam.ndim == 1:
            lam = lam.view(-1, 1, 1)
        return h_t + lam * h_w
    return h_t + float(scale) * h_w
