"""Perceiver Resampler of InstantID (and of both PSTF-AttControl streams): an embedding -> N context tokens.

Parameter names follow InstantID's ``ip_adapter/resampler.py`` so the official
``image_proj`` (ID stream) and PSTF's ``image_style_proj`` (W+ stream) load with
``strict=True``:

* ``latents`` ``[1, Q, dim]`` learned queries; ``proj_in`` Linear(E -> dim, bias);
* ``layers.{i}.0`` PerceiverAttention: ``norm1`` (on the input), ``norm2`` (on the
  latents), bias-free ``to_q``, ``to_kv``, ``to_out``;
* ``layers.{i}.1`` feed-forward: ``0`` LayerNorm, ``1`` Linear(dim -> mult*dim, no
  bias), GELU, ``3`` Linear(mult*dim -> dim, no bias);
* ``proj_out`` Linear(dim -> output_dim, bias), ``norm_out`` LayerNorm(output_dim).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Resampler", "PerceiverAttention", "feed_forward"]


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm -> Linear(dim, mult*dim) -> GELU -> Linear(mult*dim, dim); both linears bias-free."""
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
    )


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


class PerceiverAttention(nn.Module):
    """Latents attend to ``[input tokens | latents]``.

    Both q and k are scaled by ``dim_head ** -0.25`` before the product (same
    product as 1/sqrt(dim_head), rounded like the official code) and the
    softmax runs in float32.

    Args:
        dim: latent width.
        dim_head: width of one head.
        heads: number of heads.
    """

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        inner = dim_head * heads
        self.dim_head = int(dim_head)
        self.heads = int(heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Args: ``x`` ``[B, L, dim]`` projected input, ``latents`` ``[B, Q, dim]``. Returns ``[B, Q, dim]``."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        batch, queries, _ = latents.shape
        q = _split_heads(self.to_q(latents), self.heads)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        k, v = _split_heads(k, self.heads), _split_heads(v, self.heads)
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = (weight @ v).transpose(1, 2).reshape(batch, queries, -1)
        return self.to_out(out)


class Resampler(nn.Module):
    """Perceiver Resampler: ``[B, L, embedding_dim]`` -> ``[B, num_queries, output_dim]``.

    InstantID's ID stream is ``Resampler(1280, 4, 64, 20, 16, 512, 2048, 4)`` on the
    antelopev2 embedding as one token ``[B, 1, 512]``; PSTF's W+ stream the same with
    ``embedding_dim = 18 * 512`` on the flattened W+ code ``[B, 1, 9216]``.
    ``Resampler(zeros)`` is not zero (learned latents and biases): it is the CFG
    unconditional token set of the official pipelines.

    Args:
        dim: latent width (1280).
        depth: number of attention + feed-forward layers (4).
        dim_head: head width (64).
        heads: heads (20).
        num_queries: output tokens Q (16).
        embedding_dim: input width E (512 for the ID stream, 9216 for W+).
        output_dim: token width = the UNet context width (2048 for SDXL).
        ff_mult: feed-forward expansion (4).
    """

    def __init__(
        self,
        dim: int = 1280,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 20,
        num_queries: int = 16,
        embedding_dim: int = 512,
        output_dim: int = 2048,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.output_dim = int(output_dim)
        self.num_queries = int(num_queries)
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: ``x`` ``[B, L, embedding_dim]`` (L = 1 for both PSTF streams). Returns ``[B, Q, output_dim]``."""
        if x.ndim != 3 or x.shape[-1] != self.embedding_dim:
            raise ValueError(f"Resampler input must be [B, L, {self.embedding_dim}], got shape {tuple(x.shape)}")
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
