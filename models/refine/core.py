"""FaceDetailer-style face refinement geometry: crop, feather, paste back, colour match, SEGS.

The refine node generates the whole picture first and then re-renders only the
face (methods.md §5, FaceA-Net's ID/context decoupling). Everything except the
sampling lives here, ComfyUI-free, so the node only does::

    region = plan_crop(bbox, image.shape[1:3])                 # crop_factor 3, guide 512, max 1024
    crop = crop_image(image, region)                           # [B,h,w,C] at region.work_size
    noise = feather_mask(crop_mask(mask, region), 20, mode="outer")   # latent noise_mask
    ... VAE encode crop -> sample with noise mask -> VAE decode -> refined [B,h,w,C] ...
    refined = match_color(refined, crop, crop_mask(mask, region))     # optional
    out = paste_back(image, refined, region, mask, feather=5)

Conventions: images are ComfyUI ``IMAGE`` tensors ``[B,H,W,C]`` float in [0, 1];
masks are ``[B,H,W]`` or ``[H,W]`` float in [0, 1]; boxes are ``(x1, y1, x2, y2)``
in image pixels (x2/y2 exclusive); ``image_size`` is ``(height, width)`` like
``image.shape[1:3]`` and the SEGS header; working sizes are ``(width, height)``.

Differences from Impact-Pack's FaceDetailer (comfyui.md §4.2), on purpose:

* the working size is rounded to a multiple of 8 and always capped by ``max_size``
  (Impact keeps an over-sized crop at scale 1);
* the paste mask is feathered *inward* by default (erode, then blur): pixels outside
  the unfeathered mask stay bit-identical; Impact's plain blur (sigma 10) grows it;
* blending uses ``torch.lerp`` (= ``original*(1-m) + refined*m``), exact at m = 0,
  at m = 1 and where the refined pixel equals the original.
"""

from __future__ import annotations

import logging
import math
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "SEG",
    "CropRegion",
    "crop_region",
    "working_size",
    "plan_crop",
    "crop_image",
    "crop_mask",
    "box_mask",
    "feather_mask",
    "paste_back",
    "match_color",
    "to_segs",
    "from_seg",
]

#: Impact-Pack's segment record (same field names and order, ``control_net_wrapper`` defaults to None).
SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)

FeatherMode = Literal["inner", "outer"]


@dataclass(frozen=True)
class CropRegion:
    """A crop of the image and the size it is processed at.

    Attributes:
        x0, y0, x1, y1: crop rectangle in image pixels, ``x1``/``y1`` exclusive
            (Impact's ``crop_region``); always ``0 <= x0 < x1 <= W``.
        work_w, work_h: working size (width, height) the crop is resized to for
            sampling; equals the region size until :func:`working_size` is applied.
        scale: nominal resize factor working/region before rounding to the multiple.
        bbox: the face box ``(x1, y1, x2, y2)`` (float pixels) the region was built from.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    work_w: int
    work_h: int
    scale: float = 1.0
    bbox: tuple[float, float, float, float] | None = None

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def work_size(self) -> tuple[int, int]:
        """``(width, height)`` of the working crop."""
        return self.work_w, self.work_h

    def as_list(self) -> list[int]:
        """``[x0, y0, x1, y1]`` as Impact's ``SEG.crop_region``."""
        return [self.x0, self.y0, self.x1, self.y1]

    def with_working_size(self, width: int, height: int, scale: float | None = None) -> CropRegion:
        return replace(self, work_w=int(width), work_h=int(height), scale=self.scale if scale is None else float(scale))


def _check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    values = [float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(-1)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"bbox must be 4 finite numbers (x1, y1, x2, y2) in pixels, got {list(bbox)!r}")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise ValueError(f"bbox {values} is empty: x2 must exceed x1 and y2 must exceed y1")
    return values[0], values[1], values[2], values[3]


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or int(image_size[0]) < 1 or int(image_size[1]) < 1:
        raise ValueError(f"image_size must be (height, width) with positive sides, got {tuple(image_size)!r}")
    return int(image_size[0]), int(image_size[1])


def _place(centre: float, size: int, limit: int) -> tuple[int, int]:
    """Start/end of a span of ``size`` (<= limit) centred on ``centre``, shifted into [0, limit]."""
    start = int(math.floor(centre - size / 2.0 + 0.5))
    start = min(max(start, 0), limit - size)
    return start, start + size


def crop_region(
    bbox: Sequence[float],
    image_size: Sequence[int],
    crop_factor: float = 3.0,
    min_size: int = 0,
    square: bool = False,
) -> CropRegion:
    """Context region around a face box (Impact's ``make_crop_region``).

    The region is centred on the box centre, ``box size * crop_factor`` per axis
    (the longer of the two when ``square``), at least ``min_size``; it is shifted,
    not clipped, to stay inside the image, and clipped only where it is larger
    than the image. The working size equals the region size (scale 1).

    Args:
        bbox: face box ``(x1, y1, x2, y2)`` in pixels; may reach outside the image.
        image_size: ``(height, width)`` of the image.
        crop_factor: context multiplier, > 0 (FaceDetailer default 3.0).
        min_size: minimum side in pixels before clipping to the image.
        square: use the same side for both axes.

    Returns:
        CropRegion with integer bounds inside the image.
    """
    x1, y1, x2, y2 = _check_bbox(bbox)
    height, width = _check_image_size(image_size)
    if not (math.isfinite(crop_factor) and crop_factor > 0):
        raise ValueError(f"crop_factor must be a positive number, got {crop_factor!r}")
    cw, ch = (x2 - x1) * crop_factor, (y2 - y1) * crop_factor
    if square:
        cw = ch = max(cw, ch)
    cw = min(max(int(round(cw)), int(min_size), 1), width)
    ch = min(max(int(round(ch)), int(min_size), 1), height)
    rx0, rx1 = _place((x1 + x2) / 2.0, cw, width)
    ry0, ry1 = _place((y1 + y2) / 2.0, ch, height)
    return CropRegion(rx0, ry0, rx1, ry1, work_w=cw, work_h=ch, scale=1.0, bbox=(x1, y1, x2, y2))


def working_size(
    region: CropRegion,
    target: int = 512,
    max_size: int = 1024,
    multiple: int = 8,
    allow_downscale: bool = False,
    guide_for: Literal["crop", "bbox"] = "crop",
) -> tuple[int, int, float]:
    """Size the crop is sampled at (FaceDetailer ``guide_size`` / ``max_size``).

    ``scale = target / min(side)`` with the sides of the crop (``guide_for="crop"``)
    or of the face box (``"bbox"``, Impact's default); without ``allow_downscale``
    a scale below 1 becomes 1 (Impact's ``force_inpaint``). The scale is then
    lowered so the longer side fits ``max_size``; both sides are rounded to the
    nearest ``multiple`` (at least one multiple) and floored to fit ``max_size``.

    Returns:
        ``(width, height, scale)``: working size in pixels and the nominal scale.
    """
    if multiple < 1 or max_size < multiple or target < 1:
        raise ValueError(
            f"need target >= 1 and max_size >= multiple >= 1, got target={target}, max_size={max_size}, "
            f"multiple={multiple}"
        )
    rw, rh = region.width, region.height
    if guide_for == "bbox":
        if region.bbox is None:
            raise ValueError("guide_for='bbox' needs a region built from a bbox (crop_region / plan_crop)")
        bx1, by1, bx2, by2 = region.bbox
        base = min(bx2 - bx1, by2 - by1)
    elif guide_for == "crop":
        base = min(rw, rh)
    else:
        raise ValueError(f"guide_for must be 'crop' or 'bbox', got {guide_for!r}")
    scale = target / base
    if not allow_downscale:
        scale = max(scale, 1.0)
    scale = min(scale, max_size / max(rw, rh))
    cap = (max_size // multiple) * multiple

    def _side(side: int) -> int:
        return min(max(int(round(side * scale / multiple)) * multiple, multiple), cap)

    return _side(rw), _side(rh), scale


def plan_crop(
    bbox: Sequence[float],
    image_size: Sequence[int],
    crop_factor: float = 3.0,
    guide_size: int = 512,
    max_size: int = 1024,
    multiple: int = 8,
    allow_downscale: bool = False,
    guide_for: Literal["crop", "bbox"] = "crop",
    min_size: int = 0,
    square: bool = False,
) -> CropRegion:
    """:func:`crop_region` followed by :func:`working_size`; FaceDetailer defaults."""
    region = crop_region(bbox, image_size, crop_factor, min_size=min_size, square=square)
    w, h, scale = working_size(region, guide_size, max_size, multiple, allow_downscale, guide_for)
    return region.with_working_size(w, h, scale)


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


def _check_image(image: torch.Tensor, what: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ValueError(f"{what} must be an IMAGE tensor [B,H,W,C], got {_describe(image)}")


def _check_inside(region: CropRegion, height: int, width: int) -> None:
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
    _check_image(image, "image")
    _check_inside(region, image.shape[1], image.shape[2])
    th, tw = _size_hw(region, size)
    patch = image[:, region.y0 : region.y1, region.x0 : region.x1, :]
    if (th, tw) == (region.height, region.width):
        return patch.clone(memory_format=torch.contiguous_format)
    return _resize_nchw(patch.movedim(-1, 1), (th, tw), "image").movedim(1, -1).contiguous()


def _as_mask3(mask: torch.Tensor | np.ndarray, what: str = "mask") -> tuple[torch.Tensor, bool]:
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
    m3, squeeze = _as_mask3(mask)
    _check_inside(region, m3.shape[1], m3.shape[2])
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
    x1, y1, x2, y2 = _check_bbox(bbox)
    height, width = _check_image_size(image_size)
    d = int(dilation)
    c0, r0 = max(int(math.floor(x1)) - d, 0), max(int(math.floor(y1)) - d, 0)
    c1, r1 = min(int(math.ceil(x2)) + d, width), min(int(math.ceil(y2)) + d, height)
    mask = torch.zeros(height, width, dtype=torch.float32, device=device)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = 1.0
    return mask


def _gaussian_kernel1d(radius: int, sigma: float, device: torch.device) -> torch.Tensor:
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32, device=device) ** 2) / (2.0 * sigma**2))
    return k / k.sum()


def _separable(x: torch.Tensor, radius: int, op: str, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Blur (``op="blur"``) or min-filter (``"erode"``) ``[N,1,H,W]`` over a (2r+1)^2 square, replicate padding."""
    for dim in (-1, -2):
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        y = F.pad(x, pad, mode="replicate")
        ksize = (1, 2 * radius + 1) if dim == -1 else (2 * radius + 1, 1)
        if op == "erode":
            x = -F.max_pool2d(-y, kernel_size=ksize, stride=1)
        else:
            x = F.conv2d(y, kernel.view(1, 1, *ksize))
    return x


def feather_mask(
    mask: torch.Tensor | np.ndarray, feather_px: int, mode: FeatherMode = "inner", sigma: float | None = None
) -> torch.Tensor:
    """Soften a mask's edge with a Gaussian of radius ``feather_px`` pixels.

    * ``"outer"``: plain Gaussian blur (kernel ``2*feather_px+1``), as Impact's
      ``tensor_gaussian_blur_mask``; the mask grows by up to ``feather_px``.
    * ``"inner"`` (default): erode by ``feather_px`` (square min-filter), then
      blur with the same radius. Chosen over "blur, then multiply by the
      binary mask", which leaves a hard step of about 0.5 at the boundary. The
      eroded support grown by the kernel radius stays inside the original
      support, so the result is exactly 0 wherever the input is 0 (also for
      soft masks); the ramp runs from 0 at the old edge to ~1 about
      ``2*feather_px`` inside. A mask thinner than ``2*feather_px+1`` vanishes.

    Replicate padding keeps a mask that touches the image border at full strength there.

    Args:
        mask: ``[B,H,W]`` or ``[H,W]`` float in [0, 1].
        feather_px: radius in pixels; 0 returns ``mask`` unchanged (same object).
        sigma: Gaussian sigma in pixels; default ``feather_px / 2``. Impact uses 10.

    Returns:
        Same shape and dtype as ``mask`` (numpy input gives a tensor), values in [0, 1].
    """
    radius = int(feather_px)
    if radius < 0:
        raise ValueError(f"feather_px must be >= 0, got {feather_px}")
    if mode not in ("inner", "outer"):
        raise ValueError(f"mode must be 'inner' or 'outer', got {mode!r}")
    m3, squeeze = _as_mask3(mask)
    if radius == 0:
        return m3[0] if squeeze else m3
    sig = radius / 2.0 if sigma is None else float(sigma)
    if not sig > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = m3[:, None].float()
    if mode == "inner":
        x = _separable(x, radius, "erode")
    x = _separable(x, radius, "blur", _gaussian_kernel1d(radius, sig, x.device))
    out = x[:, 0].clamp_(0.0, 1.0)
    if mode == "inner":
        out = torch.where(m3.float() > 0, out, torch.zeros_like(out))  # exact even if a NaN slipped in
    out = out.to(m3.dtype if m3.is_floating_point() else torch.float32)
    return out[0] if squeeze else out


def _batch(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
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
    feather: int = 0,
    feather_mode: FeatherMode = "inner",
    sigma: float | None = None,
) -> torch.Tensor:
    """Blend a refined crop back into the image at the region origin (image space).

    ``refined_crop`` (any size) is resized to the region size; inside the region
    ``out = original*(1-m) + refined*m`` (``torch.lerp``), ``m`` = image-space
    ``mask`` feathered by ``feather`` px, cut to the region. Only pixels with
    ``m > 0`` inside the region are written into a copy of ``original``; all
    others (with ``feather_mode="inner"``: every ``mask == 0`` pixel) are bit-identical.

    Args:
        original: ``[B,H,W,C]`` image; not modified.
        refined_crop: ``[B,h,w,C]`` or ``[1,h,w,C]``, same channels.
        mask: ``[B,H,W]``/``[1,H,W]``/``[H,W]`` in [0, 1] over the whole image;
            None blends the whole region.
        feather: paste feather radius in pixels (FaceDetailer default 5).

    Returns:
        New ``[B,H,W,C]`` tensor, dtype and device of ``original``.
    """
    _check_image(original, "original")
    _check_image(refined_crop, "refined_crop")
    batch, height, width, channels = original.shape
    feather = int(feather)
    _check_inside(region, height, width)
    if refined_crop.shape[-1] != channels:
        raise ValueError(f"refined_crop has {refined_crop.shape[-1]} channels but the image has {channels}")
    refined = _batch(refined_crop, batch, "refined_crop").to(original.device)
    refined = _resize_nchw(refined.movedim(-1, 1).float().clamp(0, 1), (region.height, region.width), "image")
    refined = refined.movedim(1, -1)

    if mask is None:
        m = torch.zeros(1, height, width, device=original.device)
        m[:, region.y0 : region.y1, region.x0 : region.x1] = 1.0
    else:
        m, _ = _as_mask3(mask, "mask")
        if tuple(m.shape[1:]) != (height, width):
            raise ValueError(
                f"mask is {tuple(m.shape[1:])} but the image is (H={height}, W={width}); pass it in image space"
            )
        m = m.to(original.device)
    # feathering reaches 2*feather px: a window that much larger than the region gives the same values inside it
    wy0, wx0 = max(region.y0 - 2 * feather, 0), max(region.x0 - 2 * feather, 0)
    m = feather_mask(m[:, wy0 : region.y1 + 2 * feather, wx0 : region.x1 + 2 * feather], feather, feather_mode, sigma)
    m = m[:, region.y0 - wy0 : region.y1 - wy0, region.x0 - wx0 : region.x1 - wx0, None]
    m = _batch(m, batch, "mask").float().clamp(0.0, 1.0)

    out = original.clone()
    orig = out[:, region.y0 : region.y1, region.x0 : region.x1, :]
    blended = torch.lerp(orig.float(), refined, m.expand_as(refined)).to(original.dtype)
    out[:, region.y0 : region.y1, region.x0 : region.x1, :] = torch.where(m > 0, blended, orig)
    return out


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
        raise ValueError(f"method must be 'reinhard' or 'none', got {method!r}")
    _check_image(refined, "refined")
    _check_image(reference, "reference")
    batch, h, w, channels = refined.shape
    if channels not in (3, 4) or reference.shape[-1] != channels or tuple(reference.shape[1:3]) != (h, w):
        raise ValueError(
            f"refined {tuple(refined.shape)} and reference {tuple(reference.shape)} must share "
            "size and have 3 (RGB) or 4 (RGBA) channels"
        )
    from kornia.color import lab_to_rgb, rgb_to_lab

    ref = _batch(reference, batch, "reference").to(refined.device)
    src_lab = rgb_to_lab(refined[..., :3].movedim(-1, 1).float().clamp(0, 1))
    ref_lab = rgb_to_lab(ref[..., :3].movedim(-1, 1).float().clamp(0, 1))
    if mask is None:
        weight = torch.ones(batch, 1, h, w, device=refined.device)
    else:
        m3, _ = _as_mask3(mask, "mask")
        if tuple(m3.shape[1:]) != (h, w):
            raise ValueError(f"mask is {tuple(m3.shape[1:])} but the crops are (h={h}, w={w}); use crop_mask")
        weight = (1.0 - _batch(m3, batch, "mask").to(refined.device).float().clamp(0, 1))[:, None]
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


def _region_mask_np(mask: Any, region: CropRegion, image_hw: tuple[int, int]) -> np.ndarray:
    arr = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32)
    arr = np.squeeze(arr, axis=0) if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if arr.shape == image_hw:
        arr = arr[region.y0 : region.y1, region.x0 : region.x1]
    elif arr.shape != (region.height, region.width):
        raise ValueError(
            f"segment mask {arr.shape} matches neither the image {image_hw} nor the crop region "
            f"{(region.height, region.width)}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_segs(
    image_size: Sequence[int],
    regions: Sequence[CropRegion],
    masks: Sequence[Any],
    bboxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    confidences: Sequence[float],
    cropped_images: Sequence[torch.Tensor | None] | None = None,
) -> tuple[tuple[int, int], list[SEG]]:
    """Impact-Pack ``SEGS``: ``((H, W), [SEG, ...])``.

    Args:
        image_size: ``(height, width)``.
        regions: one :class:`CropRegion` per segment -> ``crop_region = [x0, y0, x1, y1]``.
        masks: per segment an image-space ``[H,W]`` or region-space ``[h,w]`` mask
            (tensor or array) -> ``cropped_mask`` float32 numpy ``[h,w]`` of the region.
        bboxes: ``(x1, y1, x2, y2)`` per segment -> ``bbox`` list.
        labels, confidences: per segment.
        cropped_images: optional ``[1,h,w,C]`` tensors (or None) per segment.
    """
    hw = _check_image_size(image_size)
    n = len(regions)
    lengths = {"masks": len(masks), "bboxes": len(bboxes), "labels": len(labels), "confidences": len(confidences)}
    if cropped_images is not None:
        lengths["cropped_images"] = len(cropped_images)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"to_segs got {n} regions but {bad}; give one entry per segment")
    segs = []
    for i, region in enumerate(regions):
        _check_inside(region, *hw)
        segs.append(
            SEG(
                cropped_image=None if cropped_images is None else cropped_images[i],
                cropped_mask=_region_mask_np(masks[i], region, hw),
                confidence=float(confidences[i]),
                crop_region=region.as_list(),
                bbox=[float(v) for v in _check_bbox(bboxes[i])],
                label=str(labels[i]),
                control_net_wrapper=None,
            )
        )
    return hw, segs


def from_seg(seg: Any, image_size: Sequence[int]) -> tuple[CropRegion, torch.Tensor]:
    """A :class:`CropRegion` (scale 1) and the image-space ``[H,W]`` mask of an Impact ``SEG``."""
    height, width = _check_image_size(image_size)
    x0, y0, x1, y1 = (int(v) for v in seg.crop_region)
    region = CropRegion(x0, y0, x1, y1, work_w=x1 - x0, work_h=y1 - y0, scale=1.0, bbox=_check_bbox(seg.bbox))
    _check_inside(region, height, width)
    cm = torch.as_tensor(np.asarray(seg.cropped_mask, dtype=np.float32))
    if tuple(cm.shape) != (region.height, region.width):
        raise ValueError(f"SEG cropped_mask {tuple(cm.shape)} does not match its crop_region {region.as_list()}")
    mask = torch.zeros(height, width, dtype=torch.float32)
    mask[y0:y1, x0:x1] = cm
    return region, mask
