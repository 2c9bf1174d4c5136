"""Image normalisation shared by every Likeness feature: anything image-like -> RGB ``uint8 [H, W, 3]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import InputError, LikenessError

__all__ = ["to_rgb_uint8", "IMAGE_CHANNELS", "check_image_batch", "split_alpha", "join_alpha", "fit_square"]

#: Channel counts of a ComfyUI IMAGE that every Likeness node reads: grey, grey + alpha, RGB, RGBA.
IMAGE_CHANNELS = (1, 2, 3, 4)

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


def check_image_batch(image: Any, where: str) -> int:
    """Check a ComfyUI IMAGE input ``[B,H,W,C]`` before any work; returns C.

    Accepted: B >= 1, H and W >= 1, C in :data:`IMAGE_CHANNELS` (grey is read as RGB; alpha is not
    composited). Every Likeness node that takes an IMAGE calls this first, so an odd image is refused
    before detection or sampling, with the same message everywhere.

    Raises:
        InputError: naming ``where`` and the shape.
    """
    shape = tuple(getattr(image, "shape", ()))
    if not hasattr(image, "detach") or len(shape) != 4:
        raise InputError(f"{where}: expected an IMAGE batch [B,H,W,C]; got {type(image).__name__} of shape {shape}.")
    if shape[0] == 0:
        raise InputError(
            f"{where}: the IMAGE batch is empty (0 images). The node before it dropped every image (e.g. a "
            "no-face policy 'skip'); use 'pass-through' there to keep them."
        )
    if shape[1] < 1 or shape[2] < 1:
        raise InputError(f"{where}: the images are empty ({shape[2]}x{shape[1]} pixels).")
    if shape[3] not in IMAGE_CHANNELS:
        raise InputError(
            f"{where}: images with {shape[3]} channels are not supported (shape {shape}); Likeness reads 1 (grey), "
            "2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels. Convert the image to RGB first."
        )
    return int(shape[3])


def split_alpha(image: Any, where: str) -> tuple[Any, Any]:
    """A checked IMAGE ``[B,H,W,C]`` as ``(rgb [B,H,W,3], alpha [B,H,W,1] or None)``; grey is repeated to RGB."""
    channels = check_image_batch(image, where)
    colour = image[..., : 1 if channels in (1, 2) else 3]
    rgb = colour.expand(*colour.shape[:3], 3).contiguous() if colour.shape[-1] == 1 else colour
    return rgb, (image[..., channels - 1 :] if channels in (2, 4) else None)


def join_alpha(rgb: Any, alpha: Any) -> Any:
    """``rgb`` ``[B,H,W,3]`` with the untouched ``alpha`` ``[B,H,W,1]`` appended again (None: ``rgb`` itself)."""
    if alpha is None:
        return rgb
    return torch.cat([rgb, alpha.to(rgb.dtype)], dim=-1)


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """An image ``[H,W,C]`` float in [0, 1] fitted inside ``size`` x ``size`` pixels: aspect kept, mid-grey borders."""
    h, w = int(image.shape[0]), int(image.shape[1])
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    chw = image.detach().float().cpu().permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(chw, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = torch.full((size, size, int(image.shape[2])), 0.5)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized[0].permute(1, 2, 0).clamp(0, 1)
    return out


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
