"""The triplet-decoupled cross-attention of PSTF-AttControl (InstantID's is its ID-only special case).

Both hosts call :func:`triplet_attention`: the diffusers
:class:`~.processor.TripletAttnProcessor` and the ComfyUI attn2 replace. Every
stream attends with the host layer's own query ``q = to_q(x)``; there is no
extra query projection (PSTF's ip_adapter/attention_processor_style.py):

    out = to_out(A_text + scale * A_id + scale_style * A_w)

Shapes follow ComfyUI's ``optimized_attention``: ``[B, L, heads * head_dim]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import torch

from ..attention.sdpa import AttentionFn, match_batch, sdpa_attention

__all__ = ["Stream", "triplet_attention", "is_zero"]

Stream = tuple[torch.Tensor, torch.Tensor, "float | torch.Tensor"]
"""``(k, v, scale)`` of one image stream: keys/values ``[B or 1, T, C]`` already projected at this site."""


def is_zero(scale: float | torch.Tensor) -> bool:
    """True for a plain number equal to 0 (a tensor scale is never short-cut)."""
    return isinstance(scale, Real) and not isinstance(scale, bool) and float(scale) == 0.0


def _scaled(out: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        s = scale.to(device=out.device, dtype=out.dtype)
        return out * (s.view(-1, 1, 1) if s.ndim == 1 else s)
    return out * float(scale)


def triplet_attention(
    h_t: torch.Tensor,
    q: torch.Tensor,
    streams: Sequence[Stream],
    heads: int,
    attention_fn: AttentionFn | None = None,
) -> torch.Tensor:
    """``h_t + sum(scale * MHA(q, k, v))`` over the image streams (ID, then W+).

    Args:
        h_t: ``[B, N, C]`` the text cross-attention output (before ``to_out``).
        q: ``[B, N, C]`` the host layer's query ``to_q(x)``, heads merged.
        streams: ``(k, v, scale)`` per stream; k/v ``[B or 1, T, C]`` (batch 1 is
            shared by every row). ``scale`` is a number (``0`` skips the stream
            without any work) or a tensor broadcastable to ``[B, N, 1]``
            (``[B]`` = one scale per row; ``[B, N, 1]`` = a spatial mask).
        heads: the host layer's heads (head_dim = C / heads); softmax scale 1/sqrt(head_dim), no mask.
        attention_fn: ``fn(q, k, v, heads)`` with heads merged (ComfyUI passes
            ``optimized_attention``); default :func:`~models.attention.sdpa.sdpa_attention`.

    Returns:
        ``[B, N, C]`` in ``h_t.dtype``; ``h_t`` itself when every scale is the number 0.
    """
    if h_t.ndim != 3 or q.shape != h_t.shape:
        raise ValueError(f"h_t and q must both be [B, N, C]; got {tuple(h_t.shape)} and {tuple(q.shape)}")
    batch, _, channels = q.shape
    fn = sdpa_attention if attention_fn is None else attention_fn
    out = h_t
    for n, (k, v, scale) in enumerate(streams):
        if is_zero(scale):
            continue
        k = match_batch(k, batch, f"stream {n} keys").to(q.dtype)
        v = match_batch(v, batch, f"stream {n} values").to(q.dtype)
        if k.shape[-1] != channels or v.shape[-1] != channels:
            raise ValueError(
                f"stream {n} keys/values have width {k.shape[-1]}/{v.shape[-1]} but the layer width is {channels}: "
                "the adapter weights do not belong to this attention site"
            )
        out = out + _scaled(fn(q, k, v, heads).to(h_t.dtype), scale)
    return out
