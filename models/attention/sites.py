"""The cross-attention site record shared by every adapter's explicit site table.

An adapter checkpoint keys its per-layer weights by the position of the
processor in diffusers' ``unet.attn_processors`` (attn1 at even, attn2 at odd
positions). Each adapter pins that mapping down in an explicit table of
:class:`AttnSite` (never counted at run time), checked by a reference test
against ``manifests/diffusers_attn_index_{sd15,sdxl}.json``.

ComfyUI keys are ``(block, number, index_inside_the_SpatialTransformer)``; the
middle block is ``("middle", 0, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AttnSite"]


@dataclass(frozen=True)
class AttnSite:
    """One cross-attention (attn2) site that carries adapter weights.

    Attributes:
        index: processor index in ``unet.attn_processors`` order; the key prefix
            in the checkpoint (e.g. ``ip_adapter.{index}.to_k_ip.weight``).
        diffusers_name: the processor's name in ``unet.attn_processors``.
        comfy_key: ComfyUI ``patches_replace["attn2"]`` key ``(block, number, index)``.
        hidden_size: the layer's inner width C (= to_q out features), channels.
        heads: attention heads of the host layer (head_dim = hidden_size / heads).
    """

    index: int
    diffusers_name: str
    comfy_key: tuple[str, int, int]
    hidden_size: int
    heads: int = 8
