"""Multi-head attention helpers shared by every adapter and host (diffusers processors, ComfyUI patches).

Shape convention (as ComfyUI's ``optimized_attention``): attention inputs and
outputs are ``[B, L, heads * head_dim]`` with heads merged in the last
dimension; the head split happens inside the attention function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttentionFn", "sdpa_attention", "project", "match_batch"]

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


def project(proj: nn.Module | Callable[[torch.Tensor], torch.Tensor] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
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


def match_batch(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
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
