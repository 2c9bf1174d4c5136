"""Pillow-compatible separable resampling in PyTorch.

The official alignment and whitening code resizes with Pillow (``LANCZOS``,
``BICUBIC``, ``BILINEAR``). Pillow resizes by a separable convolution whose
weights it computes per output pixel (``precompute_coeffs`` in Pillow's
``Resample.c``): the filter is stretched by ``max(in/out, 1)``, truncated at
the image border and renormalised. This module computes the same weights with
NumPy and applies them with torch (CPU or GPU), horizontal pass first, as
Pillow does. With ``round_uint8=True`` every pass is rounded and clipped to
0..255 like Pillow's 8-bit path, so results on uint8 images agree with Pillow
to at most 1 grey level (Pillow uses 22-bit fixed-point weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["FILTERS", "resample_weights", "resample_axis", "pil_resize"]


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5  # Pillow's bicubic constant
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _lanczos(x: np.ndarray) -> np.ndarray:
    # np.sinc(x) = sin(pi x) / (pi x); Pillow: sinc(x) * sinc(x / 3) on [-3, 3)
    return np.where((x >= -3.0) & (x < 3.0), np.sinc(x) * np.sinc(x / 3.0), 0.0)


#: name -> (filter function, support in input pixels at scale 1)
FILTERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bilinear": (_bilinear, 1.0),
    "bicubic": (_bicubic, 2.0),
    "lanczos": (_lanczos, 3.0),
}


def resample_weights(in_size: int, out_size: int, filter_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's resampling weights for one axis.

    Args:
        in_size: input length in pixels.
        out_size: output length in pixels.
        filter_name: ``"lanczos"`` (Pillow ``LANCZOS``/``ANTIALIAS``), ``"bicubic"`` or ``"bilinear"``.

    Returns:
        ``(start, weights)``: ``start`` int64 ``[out_size]`` is the first input index each
        output pixel reads, ``weights`` float64 ``[out_size, K]`` the normalised weights of
        input pixels ``start + k`` (zero past the image border).
    """
    if filter_name not in FILTERS:
        raise ValueError(f"unknown resampling filter {filter_name!r}; known: {sorted(FILTERS)}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resample {in_size} pixels to {out_size} pixels")
    func, base_support = FILTERS[filter_name]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # Pillow rounds with a C cast (towards zero) after adding 0.5.
    xmin = np.trunc(center - support + 0.5).astype(np.int64).clip(min=0)
    xmax = np.trunc(center + support + 0.5).astype(np.int64).clip(max=in_size) - xmin
    k = np.arange(ksize, dtype=np.int64)[None, :]
    w = func((k + xmin[:, None] - center[:, None] + 0.5) / filterscale)
    w = np.where(k < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0.0)
    return xmin, w


def resample_axis(
    x: torch.Tensor, out_size: int, filter_name: str, dim: int, *, round_uint8: bool = False
) -> torch.Tensor:
    """Resample ``x`` along ``dim`` to ``out_size`` with Pillow's weights.

    Args:
        x: float tensor of any shape (values 0..255 when ``round_uint8``).
        out_size: new length of ``dim``.
        filter_name: see :func:`resample_weights`.
        dim: the axis to resample.
        round_uint8: round half up and clip to 0..255 afterwards (Pillow's 8-bit pass).

    Returns:
        Float tensor, same dtype/device, ``dim`` of length ``out_size``.
    """
    dim = dim % x.ndim
    in_size = x.shape[dim]
    if in_size == out_size:
        return x.clone()
    start, weights = resample_weights(in_size, out_size, filter_name)
    w_t = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    xm = torch.movedim(x, dim, -1)
    rest = xm.shape[:-1]
    xm = xm.reshape(-1, in_size)
    out = torch.empty(xm.shape[0], out_size, dtype=x.dtype, device=x.device)
    lo, hi, step = _uniform_rows(start, weights)
    if hi - lo >= 8:
        # Interior rows share one kernel at a fixed stride: one strided window product.
        taps = int(np.flatnonzero(weights[lo]).max()) + 1
        seg = xm[:, int(start[lo]) : int(start[hi - 1]) + taps]
        out[:, lo:hi] = seg.unfold(-1, taps, step) @ w_t[lo, :taps]
        edges = np.r_[0:lo, hi:out_size]
    else:
        edges = np.arange(out_size)
    if edges.size:
        e_t = torch.as_tensor(edges, device=x.device)
        acc = torch.zeros(xm.shape[0], edges.size, dtype=x.dtype, device=x.device)
        start_t = torch.as_tensor(start[edges], device=x.device)
        for k in range(weights.shape[1]):
            col = weights[edges, k]
            if not col.any():
                continue
            idx = (start_t + k).clamp(max=in_size - 1)
            acc.addcmul_(xm.index_select(1, idx), w_t[e_t, k])
        out[:, e_t] = acc
    if round_uint8:
        # Pillow rounds its fixed-point sums half up.
        out = torch.floor(out + 0.5).clamp_(0.0, 255.0)
    return torch.movedim(out.reshape(*rest, out_size), -1, dim)


def _uniform_rows(start: np.ndarray, weights: np.ndarray) -> tuple[int, int, int]:
    """The longest run ``[lo, hi)`` of output rows around the middle whose weights are
    identical and whose starts advance by a constant integer ``step`` (integer scale
    factors, e.g. 4096 -> 512); ``hi - lo < 8`` means "no usable run"."""
    n = len(start)
    if n < 8:
        return 0, 0, 1
    mid = n // 2
    step = int(start[mid + 1] - start[mid]) if mid + 1 < n else 0
    if step < 1:
        return 0, 0, 1
    same = np.all(np.abs(weights - weights[mid]) < 1e-12, axis=1) & (start - start[mid] == (np.arange(n) - mid) * step)
    lo = mid
    while lo > 0 and same[lo - 1]:
        lo -= 1
    hi = mid + 1
    while hi < n and same[hi]:
        hi += 1
    return lo, hi, step


def pil_resize(
    image: torch.Tensor, size: tuple[int, int], filter_name: str, *, round_uint8: bool = True
) -> torch.Tensor:
    """Resize like ``PIL.Image.resize(size, filter)``.

    Args:
        image: float ``[..., H, W]`` (values 0..255 when ``round_uint8``).
        size: ``(width, height)`` as in Pillow.
        filter_name: ``"lanczos"``, ``"bicubic"`` or ``"bilinear"``.
        round_uint8: emulate Pillow's 8-bit rounding after each pass.

    Returns:
        Float tensor ``[..., height, width]``.
    """
    width, height = int(size[0]), int(size[1])
    out = resample_axis(image, width, filter_name, -1, round_uint8=round_uint8)
    return resample_axis(out, height, filter_name, -2, round_uint8=round_uint8)
