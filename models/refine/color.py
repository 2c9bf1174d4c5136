"""Colour matching of a redrawn face crop to its surroundings (Reinhard transfer in CIE Lab, kornia)."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from ..errors import InputError
from .paste import as_mask3, check_image, match_batch

__all__ = ["match_color"]

logger = logging.getLogger(__name__)


def _weighted_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel weighted mean and std of ``[B,C,h,w]`` with weights ``[B,1,h,w]``."""
    total = w.sum(dim=(2, 3), keepdim=True)
    mean = (x * w).sum(dim=(2, 3), keepdim=True) / total
    var = ((x - mean) ** 2 * w).sum(dim=(2, 3), keepdim=True) / total
    return mean, var.clamp_min(0.0).sqrt()


def match_color(
    refined: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | np.ndarray | None = None,
    method: Literal["reinhard", "none"] = "reinhard",
    strength: float = 1.0,
    min_fraction: float = 0.02,
) -> torch.Tensor:
    """Reinhard colour transfer of a refined crop to the original crop, in CIE Lab.

    Statistics are taken around the face: each pixel weighs ``1 - mask`` (all 1
    when ``mask`` is None) in both crops, so the colour drift of the sampler/VAE
    round trip is measured where the content should be unchanged; the transfer
    ``(x - mean_r) * std_ref / std_r + mean_ref`` per Lab channel is applied to
    every pixel of ``refined``. If the surround weighs under ``min_fraction`` of
    the crop, the whole crop is used (logged as a warning).

    Args:
        refined: ``[B,h,w,C]`` (C = 3, or 4 with alpha kept) in [0, 1].
        reference: ``[B,h,w,C]`` or ``[1,h,w,C]``, same spatial size (e.g. :func:`crop_image`).
        mask: crop-space face mask ``[B,h,w]``/``[h,w]`` in [0, 1].
        method: ``"reinhard"`` or ``"none"`` (returns ``refined`` itself).
        strength: 0 keeps ``refined``'s statistics, 1 takes the reference's.

    Returns:
        ``[B,h,w,C]`` clamped to [0, 1], dtype of ``refined``.
    """
    if method == "none":
        return refined
    if method != "reinhard":
        raise InputError(f"color_match must be 'reinhard' or 'none', got {method!r}.")
    check_image(refined, "refined")
    check_image(reference, "reference")
    batch, h, w, channels = refined.shape
    if channels not in (3, 4) or reference.shape[-1] != channels or tuple(reference.shape[1:3]) != (h, w):
        raise ValueError(
            f"refined {tuple(refined.shape)} and reference {tuple(reference.shape)} must share "
            "size and have 3 (RGB) or 4 (RGBA) channels"
        )
    ref = match_batch(reference, batch, "reference").to(refined.device)
    src_lab = rgb_to_lab(refined[..., :3].movedim(-1, 1).float().clamp(0, 1))
    ref_lab = rgb_to_lab(ref[..., :3].movedim(-1, 1).float().clamp(0, 1))
    if mask is None:
        weight = torch.ones(batch, 1, h, w, device=refined.device)
    else:
        m3, _ = as_mask3(mask, "mask")
        if tuple(m3.shape[1:]) != (h, w):
            raise ValueError(f"mask is {tuple(m3.shape[1:])} but the crops are (h={h}, w={w}); use crop_mask")
        weight = (1.0 - match_batch(m3, batch, "mask").to(refined.device).float().clamp(0, 1))[:, None]
    small = weight.sum(dim=(2, 3), keepdim=True) < min_fraction * h * w
    if bool(small.any()):
        logger.warning(
            "match_color: the area around the mask is under %.0f%% of the crop for batch items %s; "
            "using the whole crop for the colour statistics",
            100 * min_fraction,
            torch.nonzero(small.view(-1)).view(-1).tolist(),
        )
        weight = torch.where(small, torch.ones_like(weight), weight)
    mu_s, sd_s = _weighted_stats(src_lab, weight)
    mu_r, sd_r = _weighted_stats(ref_lab, weight)
    ratio = (sd_s + strength * (sd_r - sd_s)) / sd_s.clamp_min(1e-3)
    out_lab = (src_lab - mu_s) * ratio + mu_s + strength * (mu_r - mu_s)
    out = lab_to_rgb(out_lab, clip=True).clamp(0.0, 1.0).movedim(1, -1).to(refined.dtype)
    if channels == 4:
        out = torch.cat([out, refined[..., 3:]], dim=-1)
    return out
