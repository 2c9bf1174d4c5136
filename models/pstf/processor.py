"""Per-site InstantID / PSTF weights and the diffusers attention processor built on them.

Nothing here imports diffusers: :class:`TripletAttnProcessor` only duck-types
the host ``attn`` (a diffusers ``Attention``) it is called with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.diffusers_host import text_cross_attention
from .attention import is_zero, triplet_attention

__all__ = ["PSTFSiteLayer", "TripletAttnProcessor", "STREAMS"]

STREAMS = ("ip", "style")
"""Stream names as the official weights spell them: ``to_k_ip`` (identity), ``to_k_style`` (W+ attributes)."""


class PSTFSiteLayer(nn.Module):
    """The bias-free key/value projections InstantID / PSTF add to one attn2 site.

    State dict (official per-site keys, in the official order): ``to_k_ip.weight``,
    ``to_v_ip.weight`` ``[C, ctx]`` and, with the W+ stream, ``to_k_style.weight``,
    ``to_v_style.weight`` ``[C, ctx]``.

    Args:
        hidden_size: the site's inner width C (640 / 1280 on SDXL).
        cross_attention_dim: width of the image tokens = the UNet context width (2048).
        style: whether the W+ stream's weights exist (PSTF: yes; InstantID: no).
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int | None = None, *, style: bool = True) -> None:
        super().__init__()
        ctx = hidden_size if cross_attention_dim is None else cross_attention_dim
        self.hidden_size = int(hidden_size)
        self.cross_attention_dim = int(ctx)
        self.has_style = bool(style)
        self.to_k_ip = nn.Linear(ctx, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(ctx, hidden_size, bias=False)
        if style:
            self.to_k_style = nn.Linear(ctx, hidden_size, bias=False)
            self.to_v_style = nn.Linear(ctx, hidden_size, bias=False)

    def project(self, tokens: torch.Tensor, stream: str = "ip") -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one stream's tokens at this site.

        Args:
            tokens: ``[B, T, ctx]`` Resampler output (T = 16).
            stream: ``"ip"`` (identity) or ``"style"`` (W+).

        Returns:
            ``(k, v)``, each ``[B, T, C]`` in ``tokens.dtype``. They depend only on the
            tokens, so a host may compute them once per sampling run.
        """
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; choose one of {STREAMS}")
        if stream == "style" and not self.has_style:
            raise ValueError("this site has no W+ (style) weights: the adapter is InstantID (identity stream only)")
        if tokens.ndim != 3 or tokens.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"tokens must be [B, T, {self.cross_attention_dim}], got shape {tuple(tokens.shape)}")
        k_proj, v_proj = getattr(self, f"to_k_{stream}"), getattr(self, f"to_v_{stream}")
        weight_k, weight_v = k_proj.weight, v_proj.weight
        if weight_k.dtype != tokens.dtype or weight_k.device != tokens.device:
            weight_k = weight_k.to(device=tokens.device, dtype=tokens.dtype)
            weight_v = weight_v.to(device=tokens.device, dtype=tokens.dtype)
        return F.linear(tokens, weight_k), F.linear(tokens, weight_v)


class TripletAttnProcessor(PSTFSiteLayer):
    """diffusers attention processor of PSTF-AttControl (``IPAttnProcessor2_0`` of its attention_processor_style.py).

    The UNet context is ``[text | ID num_tokens | W+ num_tokens]`` (or ``[text | ID]``
    without the W+ stream, i.e. InstantID). The text part runs the stock
    cross-attention (same ops as diffusers' ``AttnProcessor2_0``); the ID and W+
    streams attend with the same query, and
    ``out = to_out(A_text + scale * A_id + scale_style * A_w)``.

    Args:
        hidden_size: the layer's inner width C.
        cross_attention_dim: the context width (2048 on SDXL).
        scale: identity scale (``ip_adapter_scale``); settable through ``.scale``.
        scale_style: W+ scale (``style_adapter_scale``); settable through ``.scale_style``.
        num_tokens: tokens per image stream at the end of the context (16).
        style: whether the W+ stream exists (False = InstantID: context ``[text | ID]``).
    """

    def __init__(
        self,
        hidden_size: int,
        cross_attention_dim: int | None = None,
        scale: float = 1.0,
        scale_style: float = 1.0,
        num_tokens: int = 16,
        *,
        style: bool = True,
    ) -> None:
        super().__init__(hidden_size, cross_attention_dim, style=style)
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.scale = scale
        self.scale_style = scale_style
        self.num_tokens = int(num_tokens)

    def split_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(text, id_tokens, w_tokens or None)`` from ``[text | ID | W+]`` (or ``[text | ID]``)."""
        image = self.num_tokens * (2 if self.has_style else 1)
        if context.shape[1] <= image:
            raise ValueError(
                f"context has {context.shape[1]} tokens but must be [text | {image} image tokens]; build it with "
                "models.pstf.diffusers_unet.encode_context"
            )
        end = context.shape[1] - image
        text = context[:, :end]
        id_tokens = context[:, end : end + self.num_tokens]
        w_tokens = context[:, end + self.num_tokens :] if self.has_style else None
        return text, id_tokens, w_tokens

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention with the identity and W+ streams (attention mask applies to the text only)."""
        if encoder_hidden_states is None:
            raise ValueError(
                "TripletAttnProcessor is for cross-attention (attn2) only: it needs encoder_hidden_states = "
                "[text | ID | W+ tokens]; keep the stock processor on self-attention layers"
            )
        text, id_tokens, w_tokens = self.split_context(encoder_hidden_states)
        h_t, q, finish = text_cross_attention(attn, hidden_states, text, attention_mask, temb)
        streams = []
        if not is_zero(self.scale):
            streams.append((*self.project(id_tokens, "ip"), self.scale))
        if w_tokens is not None and not is_zero(self.scale_style):
            streams.append((*self.project(w_tokens, "style"), self.scale_style))
        return finish(triplet_attention(h_t, q, streams, attn.heads))
