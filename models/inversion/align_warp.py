"""The image half of the FFHQ alignment recipe, vectorised in torch.

Steps follow NVIDIA's FFHQ ``recreate_aligned_images`` as used by e4e and the
W+ adapter (see ``docs/methods.md`` section 1.1): shrink, crop, optional reflect
padding with blur/median blend, PIL ``QUAD`` transform (bilinear) and the final
``ANTIALIAS`` (Lanczos) resize. Pillow details that are reproduced on purpose:

* ``QUAD`` samples output pixel ``(i, j)`` of a ``T x T`` image at source pixel
  index ``nw + (ne - nw) (i + .5)/T + (sw - nw) (j + .5)/T`` (the official code
  passes ``quad + 0.5``), bilinear with clamped neighbours, black outside
  ``[-0.5, size - 0.5)``, and **truncates** to uint8.
* Pillow resizes are emulated by :mod:`.pil_resample` (same weights, 8-bit rounding).
* A ``transform_size`` larger than ``output_size`` (the W+ adapter's 4096 -> 512)
  is rendered in bands of output rows: each band of the big image is sampled,
  truncated and Lanczos-reduced at once, so the 4096^2 image never exists in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from .pil_resample import resample_axis, resample_weights

__all__ = ["reflect_indices", "symmetric_indices", "gaussian_blur_scipy", "pad_and_blend", "quad_warp"]


def reflect_indices(n: int, before: int, after: int) -> np.ndarray:
    """Source indices of ``np.pad(..., mode='reflect')`` (edge not repeated), any pad size."""
    idx = np.arange(-before, n + after)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def symmetric_indices(n: int, before: int, after: int) -> np.ndarray:
    """Source indices of scipy.ndimage mode ``'reflect'`` (= NumPy ``'symmetric'``)."""
    idx = np.mod(np.arange(-before, n + after), 2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def gaussian_blur_scipy(img: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])`` for a ``[C, H, W]`` tensor.

    Kernel radius ``int(truncate * sigma + 0.5)``, normalised sampled Gaussian,
    half-sample symmetric borders; rows first, then columns, as scipy does.
    """
    radius = int(truncate * float(sigma) + 0.5)
    if radius < 1:
        return img.clone()
    xs = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * xs**2 / float(sigma) ** 2)
    kernel = torch.as_tensor(kernel / kernel.sum(), dtype=img.dtype, device=img.device)
    out = img
    for dim in (-2, -1):
        n = out.shape[dim]
        idx = torch.as_tensor(symmetric_indices(n, radius, radius), device=img.device)
        padded = torch.movedim(out.index_select(dim, idx), dim, -1)
        blurred = padded.unfold(-1, 2 * radius + 1, 1) @ kernel
        out = torch.movedim(blurred, -1, dim)
    return out.contiguous()


def pad_and_blend(img: torch.Tensor, pad: tuple[int, int, int, int], qsize: float) -> torch.Tensor:
    """The official padding step on a float ``[3, H, W]`` (0..255) crop.

    Args:
        img: cropped working image.
        pad: ``(left, top, right, bottom)`` in pixels (already ``>= rint(0.3 qsize)``).
        qsize: quad size in working pixels (blur sigma = 0.02 qsize).

    Returns:
        Float ``[3, H + top + bottom, W + left + right]`` rounded to 0..255 integers.
    """
    left, top, right, bottom = (int(p) for p in pad)
    _, h0, w0 = img.shape
    iy = torch.as_tensor(reflect_indices(h0, top, bottom), device=img.device)
    ix = torch.as_tensor(reflect_indices(w0, left, right), device=img.device)
    out = img.index_select(1, iy).index_select(2, ix)
    _, h, w = out.shape
    x = torch.arange(w, device=img.device, dtype=torch.float64)
    y = torch.arange(h, device=img.device, dtype=torch.float64)
    mx = 1.0 - torch.minimum(x / left, (w - 1 - x) / right)
    my = 1.0 - torch.minimum(y / top, (h - 1 - y) / bottom)
    mask = torch.maximum(mx[None, :], my[:, None]).to(img.dtype)
    blur = gaussian_blur_scipy(out, qsize * 0.02)
    out = out + (blur - out) * (mask * 3.0 + 1.0).clamp(0.0, 1.0)
    flat = out.reshape(3, -1).sort(dim=1).values
    n = flat.shape[1]
    median = (flat[:, (n - 1) // 2] + flat[:, n // 2]) * 0.5
    out = out + (median[:, None, None] - out) * mask.clamp(0.0, 1.0)
    return out.round().clamp(0.0, 255.0)


def _sample_rows(img: torch.Tensor, quad: np.ndarray, size: int, rows: np.ndarray) -> torch.Tensor:
    """PIL ``QUAD``/``BILINEAR`` samples of output rows ``rows`` of a ``size x size`` image.

    Returns float ``[3, len(rows), size]`` truncated to integers (uint8 semantics).
    Sampling uses ``grid_sample`` (bilinear, border clamping = Pillow's clamped neighbours);
    pixels whose source lies outside ``[-0.5, size - 0.5)`` are black as in Pillow.
    """
    _, h, w = img.shape
    dev = img.device
    nw, sw, ne = quad[0], quad[1], quad[3]
    u = (np.arange(size, dtype=np.float64) + 0.5) / size
    v = (np.asarray(rows, dtype=np.float64) + 0.5) / size
    # Source index x = nw + (ne - nw) u + (sw - nw) v, folded into grid_sample's normalised
    # coordinates g = (2 x + 1) / w - 1 (align_corners=False) and split into column + row terms.
    grid = torch.empty(1, len(v), size, 2, dtype=img.dtype, device=dev)
    for axis, n in ((0, w), (1, h)):
        col = torch.as_tensor(
            (2.0 * (nw[axis] + (ne[axis] - nw[axis]) * u) + 1.0) / n - 1.0, dtype=img.dtype, device=dev
        )
        row = torch.as_tensor(2.0 * (sw[axis] - nw[axis]) * v / n, dtype=img.dtype, device=dev)
        torch.add(row[:, None], col[None, :], out=grid[0, :, :, axis])
    # Pillow: black where the source lies outside [-0.5, size - 0.5), i.e. g outside [-1, 1).
    valid = ((grid >= -1.0) & (grid < 1.0)).all(dim=-1)[0]
    val = torch.nn.functional.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[
        0
    ]
    # Pillow truncates to uint8; the epsilon absorbs float32 rounding of exact integers.
    val = val.add_(1e-3).floor_().clamp_(0.0, 255.0)
    return val.mul_(valid)


def quad_warp(
    img: torch.Tensor, quad: np.ndarray, transform_size: int, output_size: int, band_rows: int = 64
) -> torch.Tensor:
    """``img.transform((T, T), QUAD, quad + 0.5, BILINEAR)`` then ``resize((O, O), LANCZOS)``.

    Args:
        img: float ``[3, H, W]`` with integer values 0..255 (the working image).
        quad: ``[4, 2]`` NW, SW, SE, NE corners in working pixel indices (no ``+ 0.5``).
        transform_size: ``T``.
        output_size: ``O <= T``.
        band_rows: output rows rendered per band when ``O < T`` (memory ~ ``band_rows * T/O * T``).

    Returns:
        Float ``[3, O, O]`` with integer values 0..255.
    """
    if output_size > transform_size:
        raise ValueError(f"output_size {output_size} must not exceed transform_size {transform_size}")
    if output_size == transform_size:
        return _sample_rows(img, quad, transform_size, np.arange(transform_size))
    start, weights = resample_weights(transform_size, output_size, "lanczos")
    taps = weights.shape[1]
    out = torch.empty(3, output_size, output_size, dtype=img.dtype, device=img.device)
    for j0 in range(0, output_size, band_rows):
        j1 = min(j0 + band_rows, output_size)
        r0 = int(start[j0])
        r1 = int(min(max(start[j0:j1] + taps), transform_size))
        big = _sample_rows(img, quad, transform_size, np.arange(r0, r1))
        # Pillow: horizontal pass (8-bit), then vertical pass over the needed rows.
        horiz = resample_axis(big, output_size, "lanczos", -1, round_uint8=True)
        rows = _vertical(horiz, start[j0:j1] - r0, weights[j0:j1])
        out[:, j0:j1] = torch.floor(rows + 0.5).clamp_(0.0, 255.0)
    return out


def _vertical(x: torch.Tensor, start: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """Apply per-output-row weights along dim -2 of ``x`` ``[C, R, W]``; returns ``[C, len(start), W]``.

    The band's weights form a small dense ``[len(start), R]`` matrix applied with one matmul.
    """
    n_out, taps = weights.shape
    dense = np.zeros((n_out, x.shape[1]), dtype=np.float64)
    cols = start[:, None] + np.arange(taps)[None, :]
    keep = (weights != 0.0) & (cols < x.shape[1])
    np.add.at(dense, (np.broadcast_to(np.arange(n_out)[:, None], cols.shape)[keep], cols[keep]), weights[keep])
    return torch.as_tensor(dense, dtype=x.dtype, device=x.device) @ x
