"""Image normalisation shared by every Likeness feature: anything image-like -> RGB ``uint8 [H, W, 3]``."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .errors import LikenessError

__all__ = ["to_rgb_uint8"]

_PIL_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Convert an image to contiguous RGB ``uint8 [H, W, 3]``.

    Accepts:

    * a PIL image of any mode (``L``, ``LA``, ``P``, ``RGBA``, ``CMYK``, ``I;16*``, ``I``, ``F``):
      ``I;16*`` is scaled by 1/257; ``I`` is treated as 16-bit when a value exceeds 255; ``F`` as
      0..1 when every value is <= 1, else as 0..255;
    * a NumPy array or torch tensor ``[H, W]``, ``[H, W, C]`` with C = 1 (grey), 2 (grey + alpha),
      3 (RGB) or 4 (RGBA), or a ComfyUI batch of one ``[1, H, W, C]``. dtypes: ``uint8``;
      ``uint16`` (``round(v / 257)``); ``bool``; float in [0, 1] (a ComfyUI IMAGE row; values
      within 0.01 outside are clipped); any other integer dtype holding 0..255.

    Alpha is dropped (not composited); grey is repeated on the three channels.

    Raises:
        LikenessError: other shapes (a channel-first or batched array says so), NaN/inf, floats
            outside [0, 1], integers outside 0..255, or an empty image.
    """
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    _check_shape(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] in (2, 4):
        arr = arr[:, :, : arr.shape[2] - 1]
    arr = _to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode in _PIL_16BIT:
        arr = np.asarray(image).astype(np.float64) / 257.0
    elif image.mode == "I":
        arr = np.asarray(image).astype(np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / 257.0
    elif image.mode == "F":
        arr = np.asarray(image).astype(np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
    else:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _check_shape(arr: np.ndarray) -> None:
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):
        hint = ""
        if arr.shape[0] in (1, 3, 4):
            hint = " It looks channel-first ([C,H,W]); pass image.transpose(1, 2, 0)."
        raise LikenessError(f"Expected an image shaped [H,W] or [H,W,C] with C in 1..4; got {tuple(arr.shape)}.{hint}")
    if arr.ndim not in (2, 3):
        raise LikenessError(
            f"Expected one image shaped [H,W] or [H,W,C]; got shape {tuple(arr.shape)}. "
            "For a batch [B,H,W,C], pass image[i] one at a time."
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise LikenessError(f"Got an empty image of shape {tuple(arr.shape)}.")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float32)
        if not np.isfinite(a).all():
            raise LikenessError("The image contains NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo < -0.01 or hi > 1.01:
            raise LikenessError(
                f"Float images must hold values in [0, 1] (a ComfyUI IMAGE); got min {lo:.3g}, max {hi:.3g}. "
                "Divide 8-bit data by 255 (or pass it as uint8)."
            )
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise LikenessError(
                f"Integer image of dtype {arr.dtype} has values {lo}..{hi}; only 0..255 (8-bit) or uint16 are "
                "understood."
            )
        return arr.astype(np.uint8)
    raise LikenessError(f"Cannot read images of dtype {arr.dtype}; use uint8, uint16 or float in [0, 1].")
