"""Image normalisation (models/images.py): every accepted layout and dtype, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.models.errors import LikenessError
from likeness.models.images import to_rgb_uint8


def test_to_rgb_uint8_formats():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert to_rgb_uint8(rgb) is not None and np.array_equal(to_rgb_uint8(rgb), rgb)
    grey = rgb[:, :, 0]
    out = to_rgb_uint8(grey)
    assert out.shape == (6, 7, 3) and np.array_equal(out[:, :, 2], grey)
    assert np.array_equal(to_rgb_uint8(grey[:, :, None]), out)
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(to_rgb_uint8(rgba), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(to_rgb_uint8(torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]), rgb)
    assert to_rgb_uint8(np.ones((2, 2), bool)).max() == 255
    assert to_rgb_uint8(np.full((2, 2, 3), 1.005, np.float32)).max() == 255  # tiny overshoot clipped


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((3, 8, 8), np.uint8), "channel-first"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"one image .* image\[i\]"),
        (np.zeros((8, 8, 5), np.uint8), "C in 1..4"),
        (np.full((4, 4, 3), 255.0, np.float32), r"\[0, 1\].*max 255"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.full((4, 4), 1000, np.int32), "0..255"),
    ],
)
def test_to_rgb_uint8_errors(arr, match):
    with pytest.raises(LikenessError, match=match):
        to_rgb_uint8(arr)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "I", "F", "CMYK"])
def test_pil_modes_become_rgb_uint8(mode):
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (20, 1))
    if mode == "I;16":
        pil = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "I":
        pil = Image.fromarray(grey.astype(np.int32) * 257)
    elif mode == "F":
        pil = Image.fromarray(grey.astype(np.float32) / 255.0)
    else:
        pil = Image.fromarray(grey).convert(mode)
    rgb = to_rgb_uint8(pil)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 50, 3) and rgb.flags.c_contiguous
    assert np.abs(rgb[:, :, 1].astype(int) - grey).max() <= (8 if mode in ("P", "CMYK") else 0)
