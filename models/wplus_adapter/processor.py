"""Per-site W+ adapter weights and the diffusers attention processor built on them.

Nothing here imports diffusers: :class:`WPlusAttnProcessor` only duck-types
the host ``attn`` (a diffusers ``Attention``) it is called with, so ``models/``
keeps working without the optional diffusers dependency.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.diffusers_host import text_cross_attention
from ..attention.sdpa import AttentionFn
from .attention import FoldedWPlus, fold_wplus_query, folded_wplus_attention, residual_wplus_attention

__all__ = ["WPlusSiteLayer", "WPlusAttnProcessor"]


class WPlusSiteLayer(nn.Module):
    """The three bias-free projections the W+ adapter adds to one attn2 site.

    State dict: ``to_k_wplus.weight`` ``[C, ctx]``, ``to_v_wplus.weight``
    ``[C, ctx]``, ``to_q_wplus.weight`` ``[C, C]`` (the official per-site keys).

    Args:
        hidden_size: the site's inner width C (320/640/1280 for SD1.5).
        cross_attention_dim: width of the W+ tokens, = the UNet context width
            (768 for SD1.5).
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int | None = None) -> None:
        super().__init__()
        ctx = hidden_size if cross_attention_dim is None else cross_attention_dim
        self.hidden_size = int(hidden_size)
        self.cross_attention_dim = int(ctx)
        # Registration order = the official processor's (k, v, q), so state_dict() keys match its order.
        self.to_k_wplus = nn.Linear(ctx, hidden_size, bias=False)
        self.to_v_wplus = nn.Linear(ctx, hidden_size, bias=False)
        self.to_q_wplus = nn.Linear(hidden_size, hidden_size, bias=False)

    def project_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the W+ tokens at this site.

        Args:
            tokens: ``[B, T, ctx]`` W+ tokens (``WProjModel`` output, T = 4).

        Returns:
            ``(k, v)``, each ``[B, T, C]`` in ``tokens.dtype``. They depend only
            on the tokens, so a host may compute them once per sampling run.
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"W+ tokens must be [B, T, {self.cross_attention_dim}], got shape {tuple(tokens.shape)}")
        weight_k, weight_v = self.to_k_wplus.weight, self.to_v_wplus.weight
        if weight_k.dtype != tokens.dtype or weight_k.device != tokens.device:
            weight_k = weight_k.to(device=tokens.device, dtype=tokens.dtype)
            weight_v = weight_v.to(device=tokens.device, dtype=tokens.dtype)
        return F.linear(tokens, weight_k), F.linear(tokens, weight_v)

    def residual(
        self,
        h_t: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        heads: int,
        scale: float | torch.Tensor,
        attention_fn: AttentionFn | None = None,
    ) -> torch.Tensor:
        """``h_t + scale * MHA(to_q_wplus(h_t), k, v)``; see :func:`~.attention.residual_wplus_attention`."""
        return residual_wplus_attention(h_t, k, v, self.to_q_wplus, heads, scale, attention_fn)

    def fold(self, tokens: torch.Tensor, heads: int) -> FoldedWPlus:
        """This site's W+ keys and values for ``tokens`` [B, T, ctx] with ``to_q_wplus`` folded in.

        See :func:`~.attention.fold_wplus_query`; a host whose tokens do not change
        over the steps computes it once per sampling run.
        """
        k, v = self.project_tokens(tokens)
        return fold_wplus_query(self.to_q_wplus, k, v, heads)


class WPlusAttnProcessor(WPlusSiteLayer):
    """diffusers attention processor of the W+ adapter for one attn2 layer.

    The UNet context is ``[text | W+ tokens]``; the last ``num_tokens`` tokens
    are split off, the text part runs the stock cross-attention (identical ops
    to diffusers' ``AttnProcessor2_0``), then the residual W+ branch is added
    before ``to_out`` (docs/design.md, "Patching"). Install with ``attn.set_processor``
    or :func:`~.diffusers_unet.apply_wplus_adapter_to_unet`.

    Args:
        hidden_size: the layer's inner width C.
        cross_attention_dim: the context width (768 for SD1.5).
        scale: λ, settable later through ``.scale``; ``0`` gives exactly the
            stock output (the W+ branch is skipped).
        num_tokens: number of W+ tokens at the end of the context (4).
    """

    def __init__(
        self, hidden_size: int, cross_attention_dim: int | None = None, scale: float = 1.0, num_tokens: int = 4
    ) -> None:
        super().__init__(hidden_size, cross_attention_dim)
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.scale = scale
        self.num_tokens = int(num_tokens)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention with the W+ residual.

        Args:
            attn: the host diffusers ``Attention``.
            hidden_states: ``[B, N, query_dim]`` (or ``[B, C, H, W]``).
            encoder_hidden_states: ``[B, L + num_tokens, ctx]`` = [text | W+ tokens].
            attention_mask: optional mask over the **text** tokens (length L).
            temb: for spatial-norm layers.

        Returns:
            Same shape as ``hidden_states``.
        """
        if encoder_hidden_states is None:
            raise ValueError(
                "WPlusAttnProcessor is for cross-attention (attn2) only: it needs encoder_hidden_states "
                "= [text | W+ tokens]; keep the stock processor on self-attention layers"
            )
        if encoder_hidden_states.shape[1] <= self.num_tokens:
            raise ValueError(
                f"context has {encoder_hidden_states.shape[1]} tokens but must be [text | {self.num_tokens} W+ "
                "tokens]; build it with diffusers_unet.encode_context"
            )
        end = encoder_hidden_states.shape[1] - self.num_tokens
        text = encoder_hidden_states[:, :end, :].contiguous()
        wplus = encoder_hidden_states[:, end:, :]

        h_t, _, finish = text_cross_attention(attn, hidden_states, text, attention_mask, temb)

        scale = self.scale
        if not (isinstance(scale, (int, float)) and float(scale) == 0.0):
            # the query projection is folded into the 4 W+ keys (attention.fold_wplus_query): same values,
            # an [N, C] x [C, 8*4] product instead of [N, C] x [C, C]
            h_t = folded_wplus_attention(h_t, self.fold(wplus, attn.heads), scale)

        return finish(h_t)
