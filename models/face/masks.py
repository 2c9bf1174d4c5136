"""Face and face-part masks at image resolution (torch + kornia).

All masks are float32 tensors in [0, 1]: ``[H, W]`` for one image, ``[B, H, W]`` for a batch
(ComfyUI's MASK layout). Points are pixel coordinates ``(x, y)`` with the centre of pixel
``[row r, col c]`` at ``(c, r)``; a pixel is inside a shape when its centre is.

Regions:
  * ``face``: convex hull of the 68 landmarks (brows optionally lifted by ``forehead``); without
    68 points an ellipse inscribed in the box, rotated to the eye line; or, given ``quad`` ``[4,2]``
    (an FFHQ crop quad), that quadrilateral.
  * ``eye_left``, ``eye_right`` (viewer's left/right), ``nose``, ``mouth``: hulls of the iBUG 68
    groups; without 68 points, ellipses around the 5 points scaled by the inter-ocular distance.
  * ``eyes`` (both eyes), ``parts`` (eyes + nose + mouth).

``grow`` and ``feather`` are the shared edge controls of :mod:`..mask_ops` (pixels): a disk
dilation/erosion of the binarised mask, then a soft edge about ``feather`` pixels wide centred on
the grown edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import LikenessError
from ..mask_ops import ellipse_mask, feather_mask, grow_mask, polygon_mask
from .types import Face

__all__ = [
    "REGIONS",
    "face_region_mask",
    "part_masks",
    "face_mask",
    "batch_face_masks",
]

_PARTS68 = {
    "eye_left": list(range(36, 42)),
    "eye_right": list(range(42, 48)),
    "nose": list(range(27, 36)),
    "mouth": list(range(48, 60)),
}
PART_NAMES = tuple(_PARTS68)
REGIONS = ("face",) + PART_NAMES + ("eyes", "parts")


def _eye_angle(face: Face) -> float:
    d = face.kps[1] - face.kps[0]
    return math.atan2(float(d[1]), float(d[0]))


def face_region_mask(
    face: Face,
    height: int,
    width: int,
    *,
    quad: np.ndarray | Sequence | None = None,
    forehead: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Face region ``[H, W]``: quad if given, else 68-landmark hull, else box ellipse (see module doc).

    Args:
        forehead: with 68 points, lift the brow points (17-26) away from the chin by this fraction
            of the chin-to-brow distance (0 = plain hull; 0.3 covers most foreheads).
    """
    if quad is not None:
        q = np.asarray(quad, dtype=np.float64)
        if q.shape != (4, 2):
            raise LikenessError(f"quad must have shape [4,2] (x, y corners); got {q.shape}")
        return polygon_mask(q, height, width, device)
    if face.landmarks68 is not None:
        lm = face.landmarks68.astype(np.float64).copy()
        if forehead:
            chin, brows = lm[8], lm[17:27].mean(axis=0)
            lm[17:27] += (brows - chin) * float(forehead)
        return polygon_mask(lm, height, width, device)
    return ellipse_mask(face.center, (face.width / 2, face.height / 2), _eye_angle(face), height, width, device)


def _parts_from_kps(face: Face, name: str, height: int, width: int, device: torch.device | str | None) -> torch.Tensor:
    k = face.kps.astype(np.float64)
    iod = max(float(np.linalg.norm(k[1] - k[0])), 1.0)
    ang = _eye_angle(face)
    if name in ("eye_left", "eye_right"):
        c = k[0] if name == "eye_left" else k[1]
        return ellipse_mask(c, (0.28 * iod, 0.16 * iod), ang, height, width, device)
    if name == "nose":
        eye_mid = (k[0] + k[1]) / 2
        c = 0.35 * eye_mid + 0.65 * k[2]
        half_len = 0.5 * float(np.linalg.norm(k[2] - eye_mid)) + 0.1 * iod
        return ellipse_mask(c, (0.22 * iod, half_len), ang, height, width, device)
    d = k[4] - k[3]
    return ellipse_mask(
        (k[3] + k[4]) / 2,
        (0.5 * float(np.linalg.norm(d)) + 0.12 * iod, 0.22 * iod),
        math.atan2(d[1], d[0]),
        height,
        width,
        device,
    )


def part_masks(
    face: Face, height: int, width: int, parts: Sequence[str] = PART_NAMES, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """``{part name: [H, W] mask}`` for ``eye_left``, ``eye_right``, ``nose``, ``mouth``."""
    out = {}
    for name in parts:
        if name not in _PARTS68:
            raise LikenessError(f"Unknown face part {name!r}; choose from {list(PART_NAMES)}.")
        if face.landmarks68 is not None:
            out[name] = polygon_mask(face.landmarks68[_PARTS68[name]], height, width, device)
        else:
            out[name] = _parts_from_kps(face, name, height, width, device)
    return out


def face_mask(
    face: Face,
    height: int,
    width: int,
    *,
    region: str = "face",
    grow: int = 0,
    feather: float = 0.0,
    quad: np.ndarray | Sequence | None = None,
    forehead: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Mask ``[H, W]`` float32 in [0, 1] of one face ``region`` (see :data:`REGIONS`), grown then feathered."""
    if region not in REGIONS:
        raise LikenessError(f"Unknown mask region {region!r}; choose from {list(REGIONS)}.")
    if region == "face":
        m = face_region_mask(face, height, width, quad=quad, forehead=forehead, device=device)
    else:
        names = {"eyes": ("eye_left", "eye_right"), "parts": PART_NAMES}.get(region, (region,))
        m = torch.stack(list(part_masks(face, height, width, names, device).values())).amax(dim=0)
    if grow:
        m = grow_mask(m, grow)
    return feather_mask(m, feather)


def batch_face_masks(
    faces_per_image: Sequence[Sequence[Face] | Face | None],
    height: int,
    width: int,
    **kwargs: object,
) -> torch.Tensor:
    """``[B, H, W]`` masks: per image the union (max) of :func:`face_mask` over its faces; zeros if none.

    Args:
        faces_per_image: per batch image a face, a list of faces, or None/[] (empty mask).
        kwargs: forwarded to :func:`face_mask` (region, grow, feather, forehead, device).
    """
    device = kwargs.get("device")
    out = torch.zeros(len(faces_per_image), height, width, dtype=torch.float32, device=device)
    for i, faces in enumerate(faces_per_image):
        if faces is None:
            continue
        for face in [faces] if isinstance(faces, Face) else faces:
            out[i] = torch.maximum(out[i], face_mask(face, height, width, **kwargs))
    return out
