"""Straightforward NumPy/PIL re-statement of the official FFHQ alignment, for parity tests.

Mirrors, step by step, NVIDIA's FFHQ ``recreate_aligned_images`` as e4e
(``utils/alignment.py``) and the W+ adapter (``script/utils.py`` ``align_face``)
run it: PIL LANCZOS shrink, crop, ``np.pad(..., 'reflect')`` with the Gaussian-blur
and median blend, ``Image.transform(QUAD, BILINEAR)`` of ``quad + 0.5`` and the
LANCZOS (ANTIALIAS) resize. Written from the official code's published steps;
the only change is that scipy's ``gaussian_filter`` is replaced by the NumPy
equivalent :func:`gaussian_filter_np` (same kernel, radius and borders) so that
the tests need no SciPy. Not imported by the pack.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def quad_from_points(eye_left, eye_right, mouth_left, mouth_right):
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = np.hypot(*x) * 2
    return quad, qsize


def quad_lm68(lm):
    lm = np.asarray(lm, dtype=np.float64)
    return quad_from_points(np.mean(lm[36:42], axis=0), np.mean(lm[42:48], axis=0), lm[48], lm[54])


def gaussian_filter_np(img: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])`` for float32 ``[H, W, C]``."""
    radius = int(truncate * float(sigma) + 0.5)
    xs = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / float(sigma) ** 2 * xs**2)
    kernel /= kernel.sum()
    out = img
    for axis in (0, 1):
        widths = [(0, 0)] * out.ndim
        widths[axis] = (radius, radius)
        padded = np.pad(out, widths, mode="symmetric").astype(np.float64)
        acc = np.zeros(out.shape, dtype=np.float64)
        n = out.shape[axis]
        for k, wk in enumerate(kernel):
            acc += wk * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc.astype(img.dtype)
    return out


def align_reference(
    img: Image.Image, quad: np.ndarray, qsize: float, output_size: int, transform_size: int, enable_padding: bool
) -> Image.Image:
    """The official image steps for an RGB PIL image and a precomputed quad."""
    quad = np.array(quad, dtype=np.float64)
    img = img.convert("RGB")

    # Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad.
    pad = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - img.size[0] + border, 0),
        max(pad[3] - img.size[1] + border, 0),
    )
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = img.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(
            1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
            1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
        )
        blur = qsize * 0.02
        img += (gaussian_filter_np(img, blur) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(img), 0, 255)), "RGB")
        quad += pad[:2]

    # Transform.
    img = img.transform(
        (transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(), Image.Resampling.BILINEAR
    )
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return img
