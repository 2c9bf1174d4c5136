"""SeFi-IDE's face-wise attention loss: keep V*'s cross-attention where "person" would look.

At chosen cross-attention sites the same UNet query ``Q`` attends to the keys of
the learned prompt ("a photo of the face of V*", keys from the stage's key
context) and to the keys of the frozen reference prompt ("a photo of the face of
person"). The loss pulls the learned attention probabilities towards the
reference ones, so V* stays on the face and does not take over background or
layout. No segmentation mask is involved.

Our choices where the paper is silent: softmax probabilities with the layer's
own scale ``1/sqrt(head_dim)``; per pixel and head the squared distance between
the two distributions over the prompt tokens (summed over tokens), averaged over
batch, heads, pixels and then over the sites; reference probabilities detached.
Default sites: the five 16x16 cross-attentions of SD1.5 at 512 px (ComfyUI keys
``input 7, 8`` and ``output 3, 4, 5``).

Hosts (a tiny test UNet, the ComfyUI training patch) call
:meth:`AttentionCapture.observe` at each site with the projected q and keys, and
compute the site's output from the returned probabilities with :func:`attend`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = [
    "SiteKey",
    "SD15_LOSS_SITES",
    "attention_probs",
    "attend",
    "facewise_attention_loss",
    "attention_mass_inside",
    "AttentionCapture",
]

SiteKey = tuple[str, int, int]
"""A cross-attention site ``(block, number, index)`` in ComfyUI's naming."""

SD15_LOSS_SITES: tuple[SiteKey, ...] = (
    ("input", 7, 0),
    ("input", 8, 0),
    ("output", 3, 0),
    ("output", 4, 0),
    ("output", 5, 0),
)
"""SD1.5's cross-attentions on the 16x16 grid of a 512 px image (1/32 of the image side)."""


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    if width % heads != 0:
        raise ValueError(f"attention width {width} is not divisible by heads={heads}")
    return x.reshape(batch, length, heads, width // heads).transpose(1, 2)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax cross-attention probabilities.

    Args:
        q: ``[B, N, C]`` projected queries (N pixels, heads merged, ``C = heads * head_dim``).
        k: ``[B or 1, L, C]`` projected keys of L prompt tokens.
        heads: the layer's head count.

    Returns:
        ``[B, heads, N, L]`` float32; each ``[..., n, :]`` sums to 1.
    """
    if k.shape[0] == 1 and q.shape[0] != 1:
        k = k.expand(q.shape[0], -1, -1)
    qh, kh = _heads(q.float(), heads), _heads(k.float(), heads)
    scale = qh.shape[-1] ** -0.5
    return torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=-1)


def attend(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The attention output for given probabilities.

    Args:
        probs: ``[B, heads, N, L]`` from :func:`attention_probs`.
        v: ``[B or 1, L, C]`` projected values.

    Returns:
        ``[B, N, C]`` with heads merged, in ``v.dtype``.
    """
    batch, heads, pixels, _ = probs.shape
    if v.shape[0] == 1 and batch != 1:
        v = v.expand(batch, -1, -1)
    out = probs @ _heads(v.float(), heads)
    return out.transpose(1, 2).reshape(batch, pixels, v.shape[-1]).to(v.dtype)


def facewise_attention_loss(probs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over batch, heads and pixels of ``sum_tokens (probs - reference)^2``; reference detached.

    Args:
        probs: ``[B, heads, N, L]`` probabilities of the learned prompt.
        reference: the same shape, for the reference prompt.

    Returns:
        A float32 scalar.
    """
    if probs.shape != reference.shape:
        raise ValueError(f"attention maps differ in shape: {tuple(probs.shape)} vs {tuple(reference.shape)}")
    return (probs.float() - reference.detach().float()).pow(2).sum(dim=-1).mean()


def attention_mass_inside(probs: torch.Tensor, token: int, mask: torch.Tensor) -> torch.Tensor:
    """Share of one token's attention that falls inside a mask, averaged over batch and heads.

    Args:
        probs: ``[B, heads, N, L]`` probabilities.
        token: index of the token (e.g. V*'s slot) in ``[0, L)``.
        mask: ``[N]`` or ``[h, w]`` with ``h * w = N``; 1 = inside (e.g. the face).

    Returns:
        A float32 scalar in [0, 1]: ``sum_inside p[..., token] / sum_all p[..., token]``.
    """
    m = mask.reshape(-1).to(probs.device, torch.float32)
    if m.numel() != probs.shape[2]:
        raise ValueError(f"mask has {m.numel()} pixels but the attention map has {probs.shape[2]}")
    column = probs[..., token].float()
    return ((column * m).sum(-1) / column.sum(-1).clamp_min(1e-12)).mean()


class AttentionCapture:
    """Collects the face-wise loss over the sites a host reports during one UNet call.

    Args:
        reference_context: ``[1 or B, L, ctx]`` the encoded reference prompt (detached);
            the host projects it with each site's own key projection.
        sites: the sites whose maps enter the loss.
    """

    def __init__(self, reference_context: torch.Tensor, sites: Iterable[SiteKey]):
        self.reference_context = reference_context.detach()
        self.sites = frozenset(tuple(s) for s in sites)
        if not self.sites:
            raise ValueError("the face-wise attention loss needs at least one site")
        self._losses: dict[SiteKey, torch.Tensor] = {}
        self.maps: dict[SiteKey, torch.Tensor] = {}

    def wants(self, site: SiteKey) -> bool:
        """Whether ``site`` enters the loss."""
        return tuple(site) in self.sites

    def observe(
        self, site: SiteKey, q: torch.Tensor, k: torch.Tensor, k_reference: torch.Tensor, heads: int
    ) -> torch.Tensor:
        """Record one site; returns the learned prompt's probabilities ``[B, heads, N, L]`` (with grad).

        Args:
            site: the site key.
            q: ``[B, N, C]`` projected queries.
            k: ``[B, L, C]`` keys of the learned prompt (its stage's key context).
            k_reference: ``[1 or B, L, C]`` keys of the reference prompt, same projection.
            heads: the layer's head count.
        """
        probs = attention_probs(q, k, heads)
        with torch.no_grad():
            reference = attention_probs(q.detach(), k_reference.detach(), heads)
        self._losses[tuple(site)] = facewise_attention_loss(probs, reference)
        self.maps[tuple(site)] = probs.detach()
        return probs

    def loss(self) -> torch.Tensor:
        """Mean of the per-site losses; raises when a wanted site was never reported."""
        missing = sorted(self.sites - set(self._losses))
        if missing:
            raise ValueError(
                f"the denoiser never reported the attention-loss sites {missing}; it reported {sorted(self._losses)}"
            )
        return torch.stack([self._losses[s] for s in sorted(self.sites)]).mean()
