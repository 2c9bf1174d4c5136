"""Mask geometry shared by every feature: polygons, grow/shrink and feathering (torch + kornia).

Masks are float32 tensors in [0, 1], ``[H, W]`` or ``[B, H, W]`` (ComfyUI's MASK layout). Points are
pixel coordinates ``(x, y)`` with the centre of pixel ``[row r, col c]`` at ``(c, r)``; a pixel is
inside a polygon when its centre is.

The two edge controls every mask input of the nodes shares, both in pixels:

* ``grow`` = G: dilate (G > 0) or erode (G < 0) the binarised mask by a disk of radius ``|G|``
  (:func:`grow_mask`).
* ``feather`` = F: the width of the soft edge. The mask ramps from 0 to 1 across about F pixels
  (a Gaussian of sigma F / 4 truncated at 2 sigma, so the ramp ends exactly: nothing beyond it
  changes). By default the ramp is centred on the edge; ``inside=True`` puts it entirely inside
  the mask, so every pixel outside the mask stays exactly 0 (:func:`feather_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from kornia.morphology import dilation, erosion

from .errors import InputError

__all__ = ["convex_hull", "polygon_mask", "ellipse_mask", "grow_mask", "feather_mask", "feather_reach"]

#: Largest disk radius of one kornia morphology pass; larger grows run as several passes (the
#: Minkowski sum of disks is a disk, up to about 1 px of digitisation at the edge).
GROW_STEP = 8


def convex_hull(points: np.ndarray | Sequence) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of ``[N, 2]`` points: vertices ``[K, 2]`` float64, K >= 1.

    With y pointing down the vertices run so that the interior lies on the left of each edge
    (``cross(q - p, x - p) >= 0``), the orientation :func:`polygon_mask` uses.
    """
    pts = sorted({(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2)})
    if len(pts) <= 2:
        return np.array(pts, dtype=np.float64).reshape(-1, 2)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def polygon_mask(
    points: np.ndarray | Sequence, height: int, width: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Binary float32 mask ``[H, W]`` of the convex hull of ``points`` ``[N, 2]`` (empty when N < 3)."""
    hull = convex_hull(points)
    mask = torch.zeros(height, width, dtype=torch.float32, device=device)
    if len(hull) < 3:
        return mask
    ys = torch.arange(height, dtype=torch.float32, device=device).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, -1)
    inside = torch.ones(height, width, dtype=torch.bool, device=device)
    for (x0, y0), (x1, y1) in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= -1e-6
    return mask.masked_fill_(inside, 1.0)


def ellipse_mask(
    center: Sequence[float],
    axes: Sequence[float],
    angle: float,
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Binary float32 mask ``[H, W]`` of an ellipse.

    Args:
        center: ``(x, y)`` pixels.
        axes: semi-axes ``(a, b)`` in pixels along the rotated x and y.
        angle: rotation of the ``a`` axis from the image x axis, radians (clockwise on screen).
    """
    a, b = max(float(axes[0]), 1e-3), max(float(axes[1]), 1e-3)
    ys = torch.arange(height, dtype=torch.float32, device=device).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, -1)
    dx, dy = xs - float(center[0]), ys - float(center[1])
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    return ((u * u + v * v) <= 1.0).to(torch.float32)


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    return ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius * radius + 0.5 * radius).to(torch.float32)


def _as_nchw(mask: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be [H, W] or [B, H, W], got {tuple(mask.shape)}")
    shape = tuple(mask.shape)
    return mask.reshape(-1, 1, *shape[-2:]).to(torch.float32), shape


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (``pixels`` > 0) or erode (< 0) by a disk of radius ``|pixels|``.

    The mask is binarised at 0.5 first; the result is binary float32 of the same shape
    (``[H, W]`` or ``[B, H, W]``). Outside the image counts as empty, so erosion also shrinks
    a mask that touches the border.
    """
    pixels = int(round(pixels))
    x, shape = _as_nchw((mask > 0.5).to(torch.float32))
    radius = abs(pixels)
    passes = math.ceil(radius / GROW_STEP)
    op = dilation if pixels > 0 else erosion
    for i in range(passes):  # near-equal steps: their sum is the closest to one disk
        step = radius // passes + (1 if i < radius % passes else 0)
        x = op(x, _disk(step, x.device), border_type="constant", border_value=0.0)
    return x.reshape(shape)


def feather_reach(width: float) -> int:
    """How far (pixels) a :func:`feather_mask` of ``width`` can change values from the mask edge."""
    return 2 * math.ceil(width / 2) if width > 0 else 0


def feather_mask(mask: torch.Tensor, width: float, *, inside: bool = False) -> torch.Tensor:
    """Soften a mask's edge into a ramp about ``width`` pixels wide (see the module docstring).

    Args:
        mask: ``[H, W]`` or ``[B, H, W]`` float in [0, 1] (soft masks are fine).
        width: ramp width in pixels; 0 returns ``mask`` itself.
        inside: put the ramp inside the mask (erode by half the width with a square window, then
            blur): the result is exactly 0 wherever ``mask`` is 0, and a mask touching the image
            border stays at full strength there. False: blur centred on the edge.

    Returns:
        Same shape, float (``mask``'s float dtype, else float32), values in [0, 1].
    """
    if not math.isfinite(width) or width < 0:
        raise InputError(f"feather width must be >= 0 pixels, got {width}.")
    if width == 0:
        return mask
    radius = math.ceil(width / 2)
    sigma = width / 4.0
    x, shape = _as_nchw(mask)
    if inside:
        row = torch.ones(1, 2 * radius + 1, device=x.device)
        x = erosion(erosion(x, row, border_type="geodesic"), row.T, border_type="geodesic")
    size = 2 * radius + 1
    out = gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="replicate").clamp_(0.0, 1.0)
    out = out.reshape(shape)
    if inside:
        out = torch.where(mask > 0, out, torch.zeros_like(out))
    return out.to(mask.dtype if mask.is_floating_point() else torch.float32)
