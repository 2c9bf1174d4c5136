"""models.finetune.curve: the loss-curve image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from likeness.models.finetune import loss_curve_image, smooth


def _ink(img: np.ndarray, colour) -> np.ndarray:
    return np.all(img == np.array(colour, dtype=np.uint8), axis=-1)


def test_curve_shape_and_that_a_falling_loss_is_drawn_falling():
    losses = [1.0 / (1 + 0.05 * i) for i in range(200)]
    img = loss_curve_image(losses, 512, 256)
    assert img.shape == (256, 512, 3) and img.dtype == np.uint8
    dark = _ink(img, (20, 70, 170))  # smoothed curve
    cols = np.where(dark.any(axis=0))[0]
    assert cols.min() < 80 and cols.max() > 480  # spans the plot from left to right
    first = np.where(dark[:, cols.min() + 2])[0].mean()
    last = np.where(dark[:, cols.max() - 2])[0].mean()
    assert first < last  # rows grow downwards: the curve goes down
    assert _ink(img, (160, 190, 235)).any()  # the raw curve is drawn too


def test_degenerate_inputs_still_give_an_image():
    for losses in ([], [0.5], [0.3] * 5, [math.nan, 1.0, math.inf, 0.5]):
        img = loss_curve_image(losses, 200, 120)
        assert img.shape == (120, 200, 3)
    blank = loss_curve_image([], 200, 120)
    assert not _ink(blank, (20, 70, 170)).any()
    with pytest.raises(ValueError, match="at least 128x96"):
        loss_curve_image([1.0], 64, 64)


def test_smoothing_is_bias_corrected():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    s = smooth([0.0] * 50 + [1.0] * 50, weight=0.9)
    assert s[0] == 0.0 and 0.99 < s[-1] <= 1.0 and s[55] < 1.0
