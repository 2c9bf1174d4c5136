"""The W+ adapter's residual cross-attention (the branch every host adds to its text attention).

Both the diffusers :class:`~.processor.WPlusAttnProcessor` and the ComfyUI attn2
replace call :func:`residual_wplus_attention`, so the two integrations cannot
drift apart. Shapes follow ComfyUI's ``optimized_attention``: ``[B, L, heads *
head_dim]`` with heads merged in the last dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch
from torch import nn

from ..attention.sdpa import AttentionFn, match_batch, project, sdpa_attention

__all__ = ["residual_wplus_attention"]


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
    (docs/design.md, "Patching"). The caller applies ``to_out`` afterwards.

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
    k = match_batch(w_tokens_k, batch, "w_tokens_k").to(h_t.dtype)
    v = match_batch(w_tokens_v, batch, "w_tokens_v").to(h_t.dtype)
    if k.shape[-1] != channels or v.shape[-1] != channels:
        raise ValueError(
            f"W+ keys/values have width {k.shape[-1]}/{v.shape[-1]} but the layer width is {channels}: "
            "the adapter weights do not belong to this attention site"
        )
    q = project(to_q_wplus, h_t)
    fn = sdpa_attention if attention_fn is None else attention_fn
    h_w = fn(q, k, v, heads).to(h_t.dtype)
    if isinstance(scale, torch.Tensor):
        lam = scale.to(device=h_t.device, dtype=h_t.dtype)
        if lam.ndim == 1:
            lam = lam.view(-1, 1, 1)
        return h_t + lam * h_w
    return h_t + float(scale) * h_w
