"""The W+ adapter's residual cross-attention (the branch every host adds to its text attention).

Both the diffusers :class:`~.processor.WPlusAttnProcessor` and the ComfyUI attn2
replace call :func:`residual_wplus_attention`, so the two integrations cannot
drift apart. Shapes follow ComfyUI's ``optimized_attention``: ``[B, L, heads *
head_dim]`` with heads merged in the last dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn

from ..attention.sdpa import AttentionFn, match_batch, project, sdpa_attention

__all__ = ["residual_wplus_attention", "FoldedWPlus", "fold_wplus_query", "folded_wplus_attention"]


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


@dataclass(frozen=True)
class FoldedWPlus:
    """The W+ keys and values of one site with the site's query projection folded in.

    With ``q = h_t Wq^T`` and only T (= 4) keys, the per-head logits are
    ``q_h k_h^T / sqrt(d) = h_t (Wq_h^T k_h^T / sqrt(d))``: the product in brackets
    is a ``[C, T]`` matrix per head that depends on the W+ tokens and the weights
    only. Folding it once replaces the ``[N, C] x [C, C]`` query projection of every
    call by an ``[N, C] x [C, heads*T]`` product (about C / 32 times less work).

    Attributes:
        logits: ``[Bk, C, heads*T]`` (1/sqrt(head_dim) included); column ``h*T + t``
            gives head ``h``'s logit for token ``t``.
        values: ``[Bk, heads*T, C]`` block-diagonal: row ``h*T + t`` holds token
            ``t``'s value in head ``h``'s columns, zeros elsewhere, so one product
            ``probs @ values`` gives the heads-merged ``[N, C]`` output.
        heads: the host layer's head count.
    """

    logits: torch.Tensor
    values: torch.Tensor
    heads: int

    @property
    def batch(self) -> int:
        return self.logits.shape[0]


def fold_wplus_query(
    to_q_wplus: nn.Module | torch.Tensor, w_tokens_k: torch.Tensor, w_tokens_v: torch.Tensor, heads: int
) -> FoldedWPlus:
    """Fold a site's ``to_q_wplus`` into its projected W+ keys (see :class:`FoldedWPlus`).

    Args:
        to_q_wplus: the site's bias-free ``Linear(C, C)`` or its ``[C, C]`` weight.
        w_tokens_k: ``[Bk, T, C]`` keys (``to_k_wplus`` of the tokens).
        w_tokens_v: ``[Bk, T, C]`` values (``to_v_wplus`` of the tokens).
        heads: the host layer's head count; must divide C.

    Returns:
        Tensors in the keys' dtype and device; the fold itself is computed in float32.
    """
    weight = to_q_wplus if isinstance(to_q_wplus, torch.Tensor) else to_q_wplus.weight
    batch, tokens, channels = w_tokens_k.shape
    if w_tokens_v.shape != w_tokens_k.shape or tuple(weight.shape) != (channels, channels):
        raise ValueError(
            f"W+ keys {tuple(w_tokens_k.shape)}, values {tuple(w_tokens_v.shape)} and query weight "
            f"{tuple(weight.shape)} do not belong to one attention site of width {channels}"
        )
    if channels % heads != 0:
        raise ValueError(f"attention width {channels} is not divisible by heads={heads}")
    head_dim = channels // heads
    dtype = w_tokens_k.dtype
    # differentiable (the trainers backpropagate through it); hosts that fold once per run call it under no_grad
    wq = weight.to(device=w_tokens_k.device, dtype=torch.float32).view(heads, head_dim, channels)
    k = w_tokens_k.float().view(batch, tokens, heads, head_dim)
    logits = torch.einsum("hdc,bthd->bcht", wq, k).mul(head_dim**-0.5).reshape(batch, channels, heads * tokens)
    v = w_tokens_v.view(batch, tokens, heads, head_dim)
    eye = torch.eye(heads, device=v.device, dtype=v.dtype)
    values = torch.einsum("bthd,hg->bhtgd", v, eye).reshape(batch, heads * tokens, channels)
    return FoldedWPlus(logits.to(dtype).contiguous(), values.contiguous(), heads)


def folded_wplus_attention(h_t: torch.Tensor, folded: FoldedWPlus, scale: float | torch.Tensor) -> torch.Tensor:
    """``h_t + scale * MHA(to_q_wplus(h_t), k, v)`` from a :class:`FoldedWPlus`; same value as
    :func:`residual_wplus_attention` (float rounding aside), a fraction of its work.

    Args:
        h_t: ``[B, N, C]`` text attention output, heads merged.
        folded: the site's folded W+ keys/values with batch 1 (shared) or B.
        scale: λ as in :func:`residual_wplus_attention` (number, ``[B]`` or
            ``[B, N, 1]`` tensor); a Python ``0`` returns ``h_t`` untouched.

    Returns:
        ``[B, N, C]`` in ``h_t.dtype``. The softmax runs in float32.
    """
    if isinstance(scale, Real) and not isinstance(scale, bool) and float(scale) == 0.0:
        return h_t
    if h_t.ndim != 3:
        raise ValueError(f"h_t must be [B, N, C], got shape {tuple(h_t.shape)}")
    batch, tokens, channels = h_t.shape
    if folded.logits.shape[1] != channels:
        raise ValueError(
            f"W+ keys/values have width {folded.logits.shape[1]} but the layer width is {channels}: "
            "the adapter weights do not belong to this attention site"
        )
    if folded.batch not in (1, batch):
        raise ValueError(
            f"W+ keys have batch {folded.batch} but the attention batch is {batch}; "
            "give one token set per batch entry (or a single one to share)"
        )
    logits_w, values = folded.logits.to(h_t.dtype), folded.values.to(h_t.dtype)
    shared = folded.batch == 1 and batch > 1
    if shared:  # one token set for every row: fold the batch into the rows of plain matrix products
        logits = (h_t.reshape(-1, channels) @ logits_w[0]).view(batch, tokens, -1)
    else:
        logits = torch.bmm(h_t, logits_w)  # [B, N, heads*T]
    probs = torch.softmax(logits.view(batch, tokens, folded.heads, -1).float(), dim=-1).view(batch, tokens, -1)
    alpha = 1.0
    if isinstance(scale, torch.Tensor):
        lam = scale.to(device=h_t.device, dtype=torch.float32)
        probs = probs * (lam.view(-1, 1, 1) if lam.ndim == 1 else lam)
    else:
        alpha = float(scale)
    probs = probs.to(h_t.dtype)
    if shared:
        out = torch.addmm(h_t.reshape(-1, channels), probs.view(-1, probs.shape[-1]), values[0], alpha=alpha)
        return out.view(batch, tokens, channels)
    return torch.baddbmm(h_t, probs, values, alpha=alpha)
