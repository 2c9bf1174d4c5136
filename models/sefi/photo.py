"""The one training photo: crop (face, centre or whole image) and resize to the training resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import LikenessError

__all__ = ["CROP_POLICIES", "face_square", "center_square", "prepare_photo"]

CROP_POLICIES = ("face", "center", "stretch")
"""face: a square around the detected face; center: the largest centred square; stretch: the whole image resized."""


def face_square(bbox: Sequence[float], height: int, width: int, margin: float = 2.0) -> tuple[int, int, int]:
    """A square ``(left, top, side)`` centred on a face box, ``margin`` times its longer side.

    The square is shrunk to fit the image when it is larger, then shifted inside it.

    Args:
        bbox: ``(x0, y0, x1, y1)`` in pixels.
        height: image height in pixels.
        width: image width in pixels.
        margin: side of the square over the longer side of the box (2 = the face fills
            about half of the crop's width).
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not (x1 > x0 and y1 > y0):
        raise LikenessError(f"face box {tuple(bbox)} is empty")
    if margin <= 0:
        raise LikenessError(f"face crop margin must be positive, got {margin}")
    side = int(round(min(max(x1 - x0, y1 - y0) * margin, height, width)))
    side = max(side, 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, side


def center_square(height: int, width: int) -> tuple[int, int, int]:
    """The largest centred square ``(left, top, side)``."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def prepare_photo(
    image: torch.Tensor,
    policy: str,
    resolution: int,
    face_bbox: Sequence[float] | None = None,
    margin: float = 2.0,
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Crop and resize one photo for training.

    Args:
        image: ``[H, W, 3]`` float in [0, 1] (ComfyUI IMAGE layout, one image).
        policy: one of :data:`CROP_POLICIES`.
        resolution: output side in pixels (a multiple of 8).
        face_bbox: the face box ``(x0, y0, x1, y1)``; required for ``face``.
        margin: see :func:`face_square`.

    Returns:
        ``([resolution, resolution, 3] float in [0, 1], (left, top, width, height) of the crop)``.
    """
    if image.ndim != 3 or image.shape[-1] < 3:
        raise LikenessError(f"the photo must be one [H, W, 3] image, got shape {tuple(image.shape)}")
    if resolution % 8 != 0 or resolution < 8:
        raise LikenessError(f"training resolution must be a positive multiple of 8, got {resolution}")
    height, width = int(image.shape[0]), int(image.shape[1])
    if policy == "face":
        if face_bbox is None:
            raise LikenessError("face crop needs a detected face: connect a face analyzer or choose 'center'")
        left, top, side = face_square(face_bbox, height, width, margin)
        box = (left, top, side, side)
    elif policy == "center":
        left, top, side = center_square(height, width)
        box = (left, top, side, side)
    elif policy == "stretch":
        box = (0, 0, width, height)
    else:
        raise LikenessError(f"unknown face crop policy {policy!r}; choose one of {list(CROP_POLICIES)}")
    left, top, w, h = box
    crop = image[top : top + h, left : left + w, :3].float()
    chw = crop.permute(2, 0, 1)[None]
    resized = F.interpolate(chw, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).clamp(0, 1), box
