"""Where a face is refined: the context crop around its box and the working size it is sampled at.

Conventions: boxes are ``(x1, y1, x2, y2)`` in image pixels (x2/y2 exclusive); ``image_size`` is
``(height, width)`` like ``image.shape[1:3]`` and the SEGS header; working sizes are ``(width, height)``.

Differences from Impact-Pack's FaceDetailer, on purpose: the working size is rounded to a multiple
of 8 and always capped by ``max_size`` (Impact keeps an over-sized crop at scale 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from ..errors import InputError

__all__ = ["CropRegion", "crop_region", "working_size", "plan_crop", "check_bbox", "check_image_size"]


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


def check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    values = [float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(-1)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"A face box must be 4 finite numbers (x1, y1, x2, y2) in pixels, got {list(bbox)!r}.")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise InputError(f"The face box {values} is empty: x2 must exceed x1 and y2 must exceed y1.")
    return values[0], values[1], values[2], values[3]


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
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
    x1, y1, x2, y2 = check_bbox(bbox)
    height, width = check_image_size(image_size)
    if not (math.isfinite(crop_factor) and crop_factor > 0):
        raise InputError(f"crop_factor must be a positive number, got {crop_factor!r}.")
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
