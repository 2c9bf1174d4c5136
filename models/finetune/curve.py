"""The loss-curve picture of a fine-tuning run (PIL only).

The raw per-step loss is drawn thin and light, its exponential moving average thick and dark;
the axes carry the first and last step and the loss range, and the title the last smoothed loss.
Non-finite values are skipped. Used for the ``loss_curve`` IMAGE output and for the progress
preview while training runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["smooth", "loss_curve_image"]

_BG, _AXIS, _RAW, _SMOOTH, _TEXT = (255, 255, 255), (60, 60, 60), (160, 190, 235), (20, 70, 170), (20, 20, 20)


def smooth(values: Sequence[float], weight: float | None = None) -> list[float]:
    """Bias-corrected exponential moving average (TensorBoard-style) of ``values``.

    Args:
        weight: decay in [0, 1); default grows with the length: ``1 - 10 / max(len, 10)`` capped at 0.95.
    """
    n = len(values)
    if weight is None:
        weight = min(0.95, 1.0 - 10.0 / max(n, 10))
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = weight * acc + (1.0 - weight) * v
        norm = weight * norm + (1.0 - weight)
        out.append(acc / norm)
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def loss_curve_image(
    losses: Sequence[float], width: int = 512, height: int = 256, *, first_step: int = 1, title: str = "loss"
) -> np.ndarray:
    """Draw the loss curve.

    Args:
        losses: loss per step, in order (may be empty).
        width, height: image size in pixels (at least 128 x 96).
        first_step: step number of ``losses[0]`` (the x axis is labelled in steps).
        title: text before the last values in the title line.

    Returns:
        ``[height, width, 3]`` uint8 RGB.
    """
    if width < 128 or height < 96:
        raise ValueError(f"loss curve needs at least 128x96 pixels, got {width}x{height}")
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 52, width - 12, 22, height - 28
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS, width=1)
    points = [(first_step + i, float(v)) for i, v in enumerate(losses) if math.isfinite(float(v))]
    if not points:
        draw.text((left + 8, top + 8), "no finite loss yet", fill=_TEXT, font=font)
        return np.asarray(img, dtype=np.uint8).copy()
    steps = [s for s, _ in points]
    raw = [v for _, v in points]
    ema = smooth(raw)
    lo, hi = min(raw), max(raw)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * abs(lo) - 1e-3, hi + 0.5 * abs(hi) + 1e-3
    s0, s1 = steps[0], max(steps[-1], steps[0] + 1)

    def xy(step: int, value: float) -> tuple[float, float]:
        x = left + (step - s0) / (s1 - s0) * (right - left)
        y = bottom - (value - lo) / (hi - lo) * (bottom - top)
        return x, y

    if len(points) == 1:
        x, y = xy(steps[0], raw[0])
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_SMOOTH)
    else:
        draw.line([xy(s, v) for s, v in zip(steps, raw, strict=True)], fill=_RAW, width=1)
        draw.line([xy(s, v) for s, v in zip(steps, ema, strict=True)], fill=_SMOOTH, width=2)
    draw.text((4, top - 4), _fmt(hi), fill=_TEXT, font=font)
    draw.text((4, bottom - 8), _fmt(lo), fill=_TEXT, font=font)
    draw.text((left - 2, bottom + 6), f"step {steps[0]}", fill=_TEXT, font=font)
    last = f"step {steps[-1]}"
    draw.text((right - 6 * len(last), bottom + 6), last, fill=_TEXT, font=font)
    draw.text((left, 4), f"{title}: last {_fmt(raw[-1])}, smoothed {_fmt(ema[-1])}", fill=_TEXT, font=font)
    return np.asarray(img, dtype=np.uint8).copy()
