"""Cut a face crop out of the image, and paste the redrawn crop back under its (feathered) mask.

Images are ComfyUI ``IMAGE`` tensors ``[B,H,W,C]`` float in [0, 1]; masks ``[B,H,W]`` or ``[H,W]``
float in [0, 1]. Pasting feathers the mask *inward* (:func:`..mask_ops.feather_mask` with
``inside=True``), so every pixel outside the unfeathered mask stays bit-identical (Impact-Pack's
plain blur grows the mask instead); blending uses ``torch.lerp``, exact at m = 0, at m = 1 and
where the redrawn pixel equals the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..mask_ops import feather_mask, feather_reach
from .regions import CropRegion, check_bbox, check_image_size

__all__ = [
    "crop_image",
    "crop_mask",
    "box_mask",
    "paste_back",
    "as_mask3",
    "match_batch",
    "check_image",
    "check_inside",
]


def _resize_nchw(x: torch.Tensor, size_hw: tuple[int, int], kind: Literal["image", "mask"]) -> torch.Tensor:
    """Resize float ``[N,C,h,w]``; returns ``x`` itself when the size already matches.

    Images: bicubic when enlarging, area when shrinking both axes, antialiased
    bicubic for mixed cases. Masks: bilinear / area / antialiased bilinear.
    The result is computed in float32 and clamped to [0, 1].
    """
    h, w = x.shape[-2:]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return x
    src = x.float()
    if th <= h and tw <= w:
        out = F.interpolate(src, size=(th, tw), mode="area")
    else:
        mode = "bicubic" if kind == "image" else "bilinear"
        shrink = th < h or tw < w
        out = F.interpolate(src, size=(th, tw), mode=mode, align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0).to(x.dtype)


def _describe(x: Any) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def check_image(image: torch.Tensor, what: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ValueError(f"{what} must be an IMAGE tensor [B,H,W,C], got {_describe(image)}")


def check_inside(region: CropRegion, height: int, width: int) -> None:
    if not (0 <= region.x0 < region.x1 <= width and 0 <= region.y0 < region.y1 <= height):
        raise ValueError(
            f"crop region {region.as_list()} does not lie inside the image of size (H={height}, W={width})"
        )


def _size_hw(region: CropRegion, size: tuple[int, int] | None) -> tuple[int, int]:
    w, h = region.work_size if size is None else (int(size[0]), int(size[1]))
    if w < 1 or h < 1:
        raise ValueError(f"working size (width, height) must be positive, got {(w, h)}")
    return h, w


def crop_image(image: torch.Tensor, region: CropRegion, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Cut ``region`` out of ``image`` [B,H,W,C] and resize it to ``size`` = (width, height).

    ``size`` defaults to ``region.work_size``. Without resizing the result is an
    exact copy of the pixels. Returns a new ``[B,h,w,C]`` tensor, same dtype/device.
    """
    check_image(image, "image")
    check_inside(region, image.shape[1], image.shape[2])
    th, tw = _size_hw(region, size)
    patch = image[:, region.y0 : region.y1, region.x0 : region.x1, :]
    if (th, tw) == (region.height, region.width):
        return patch.clone(memory_format=torch.contiguous_format)
    return _resize_nchw(patch.movedim(-1, 1), (th, tw), "image").movedim(1, -1).contiguous()


def as_mask3(mask: torch.Tensor | np.ndarray, what: str = "mask") -> tuple[torch.Tensor, bool]:
    """``[B,H,W]`` view of a mask and whether the input was 2-D."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ValueError(f"{what} must be a MASK tensor [B,H,W] or [H,W], got {_describe(mask)}")
    return (mask[None], True) if mask.ndim == 2 else (mask, False)


def crop_mask(mask: torch.Tensor | np.ndarray, region: CropRegion, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Cut ``region`` out of an image-space mask and resize it to ``size`` = (width, height).

    Args:
        mask: ``[B,H,W]`` or ``[H,W]`` float in [0, 1].
        size: defaults to ``region.work_size``.

    Returns:
        ``[B,h,w]`` or ``[h,w]`` (same rank as the input), float in [0, 1].
    """
    m3, squeeze = as_mask3(mask)
    check_inside(region, m3.shape[1], m3.shape[2])
    th, tw = _size_hw(region, size)
    patch = m3[:, region.y0 : region.y1, region.x0 : region.x1]
    patch = patch if patch.is_floating_point() else patch.float()
    out = _resize_nchw(patch[:, None], (th, tw), "mask")[:, 0].clone()
    return out[0] if squeeze else out


def box_mask(
    bbox: Sequence[float], image_size: Sequence[int], dilation: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rectangle mask ``[H,W]`` float32 (1 inside) of a box grown by ``dilation`` pixels per side.

    The box is rounded outward to whole pixels and clipped to the image
    (Impact's one-rectangle-per-box mask followed by ``bbox_dilation``).
    """
    x1, y1, x2, y2 = check_bbox(bbox)
    height, width = check_image_size(image_size)
    d = int(dilation)
    c0, r0 = max(int(math.floor(x1)) - d, 0), max(int(math.floor(y1)) - d, 0)
    c1, r1 = min(int(math.ceil(x2)) + d, width), min(int(math.ceil(y2)) + d, height)
    mask = torch.zeros(height, width, dtype=torch.float32, device=device)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = 1.0
    return mask


def match_batch(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{what} has batch {x.shape[0]} but the image has batch {batch}; give 1 or {batch}")


def paste_back(
    original: torch.Tensor,
    refined_crop: torch.Tensor,
    region: CropRegion,
    mask: torch.Tensor | np.ndarray | None = None,
    feather: float = 0.0,
) -> torch.Tensor:
    """Blend a refined crop back into the image at the region origin (image space).

    ``refined_crop`` (any size) is resized to the region size; inside the region
    ``out = original*(1-m) + refined*m`` (``torch.lerp``), ``m`` = image-space
    ``mask`` feathered inward over ``feather`` px, cut to the region. Only pixels
    with ``m > 0`` inside the region are written into a copy of ``original``; all
    others (every ``mask == 0`` pixel) are bit-identical.

    Args:
        original: ``[B,H,W,C]`` image; not modified.
        refined_crop: ``[B,h,w,C]`` or ``[1,h,w,C]``, same channels.
        mask: ``[B,H,W]``/``[1,H,W]``/``[H,W]`` in [0, 1] over the whole image;
            None blends the whole region.
        feather: width of the soft edge in pixels, inside the mask (0 = hard edge).

    Returns:
        New ``[B,H,W,C]`` tensor, dtype and device of ``original``.
    """
    check_image(original, "original")
    check_image(refined_crop, "refined_crop")
    batch, height, width, channels = original.shape
    check_inside(region, height, width)
    if refined_crop.shape[-1] != channels:
        raise ValueError(f"refined_crop has {refined_crop.shape[-1]} channels but the image has {channels}")
    refined = match_batch(refined_crop, batch, "refined_crop").to(original.device)
    refined = _resize_nchw(refined.movedim(-1, 1).float().clamp(0, 1), (region.height, region.width), "image")
    refined = refined.movedim(1, -1)

    if mask is None:
        m = torch.zeros(1, height, width, device=original.device)
        m[:, region.y0 : region.y1, region.x0 : region.x1] = 1.0
    else:
        m, _ = as_mask3(mask, "mask")
        if tuple(m.shape[1:]) != (height, width):
            raise ValueError(
                f"mask is {tuple(m.shape[1:])} but the image is (H={height}, W={width}); pass it in image space"
            )
        m = m.to(original.device)
    # feathering changes values up to `reach` px away: a window that much larger than the region gives the
    # same values inside it as the whole image would
    reach = feather_reach(feather)
    wy0, wx0 = max(region.y0 - reach, 0), max(region.x0 - reach, 0)
    m = feather_mask(m[:, wy0 : region.y1 + reach, wx0 : region.x1 + reach].float(), feather, inside=True)
    m = m[:, region.y0 - wy0 : region.y1 - wy0, region.x0 - wx0 : region.x1 - wx0, None]
    m = match_batch(m, batch, "mask").float().clamp(0.0, 1.0)

    out = original.clone()
    orig = out[:, region.y0 : region.y1, region.x0 : region.x1, :]
    blended = torch.lerp(orig.float(), refined, m.expand_as(refined)).to(original.dtype)
    out[:, region.y0 : region.y1, region.x0 : region.x1, :] = torch.where(m > 0, blended, orig)
    return out
