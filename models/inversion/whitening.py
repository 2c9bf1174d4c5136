"""Background whitening before W+ adapter inversion.

The W+ adapter's stage-2 model was trained on e4e codes of faces whose background
was painted white. The official script parses the 512 px aligned face with
PSFRGAN's ParseNet (19 classes, :mod:`..parsenet`), marks background (0) and cloth
(18), blurs that mask with ``cv2.GaussianBlur(mask, (5, 5), 0)``, resizes it to 256
with Pillow's default (bicubic) filter and composites ``x * (1 - M) + M`` on the
e4e input.

Fallbacks are explicit user choices (:func:`.pipeline.resolve_whitening` decides and loads
the model once): ``"parsenet"`` (the official network; needs ``parse_multi_iter_90000.pth``
in the ``face_parsing`` folder), ``"landmark_hull"`` (a geometric mask from landmarks, no
model) and ``"none"`` (no whitening).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import LikenessError
from ..mask_ops import ellipse_mask, polygon_mask
from ..parsenet import ParseNet, background_mask, parse_face

logger = logging.getLogger(__name__)

__all__ = ["WHITENING_METHODS", "HULL_FOREHEAD_FACTOR", "whiten_background", "hull_background_mask", "whitening_mask"]

WHITENING_METHODS: tuple[str, ...] = ("parsenet", "landmark_hull", "none")


def _as_mask_4d(mask: torch.Tensor) -> torch.Tensor:
    if mask.ndim == 2:
        return mask[None, None]
    if mask.ndim == 3:
        return mask[:, None]
    if mask.ndim == 4 and mask.shape[1] == 1:
        return mask
    raise ValueError(f"mask must be [H, W], [B, H, W] or [B, 1, H, W], got {tuple(mask.shape)}")


def whiten_background(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paint the background of an e4e input white, as the W+ adapter's script does.

    The 0..1 mask (1 = background) is quantised to 8 bits, blurred like
    ``cv2.GaussianBlur(mask, (5, 5), 0)`` (for ksize 5 and sigma 0 OpenCV uses its fixed
    binomial kernel [1, 4, 6, 4, 1] / 16, not a sampled Gaussian of sigma 1.1; borders
    reflect-101), resized to the input size with Pillow bicubic (8-bit), divided by 255 and
    composited ``x * (1 - M) + M``.

    Args:
        x: float ``[B, 3, 256, 256]`` e4e input in ``[-1, 1]``.
        mask: float ``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]`` in ``[0, 1]`` (512 px from ParseNet).

    Returns:
        The whitened tensor, same shape/dtype/device as ``x``: exactly +1 where the blurred mask
        is 1, unchanged where it is 0.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be [B, 3, H, W], got {tuple(x.shape)}")
    m = _as_mask_4d(mask).to(device=x.device, dtype=torch.float32)
    m = torch.floor(m.clamp(0.0, 1.0) * 255.0 + 0.5)
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16.0
    m = nn.functional.pad(m, (2, 2, 2, 2), mode="reflect")
    m = nn.functional.conv2d(m, kernel.reshape(1, 1, 1, 5))
    m = nn.functional.conv2d(m, kernel.reshape(1, 1, 5, 1))
    m = torch.floor(m + 0.5).clamp(0.0, 255.0)
    if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
        m = _pil_resize_masks(m, (x.shape[-1], x.shape[-2]))
    m = (m / 255.0).to(x.dtype)
    if m.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"mask batch {m.shape[0]} does not match image batch {x.shape[0]}")
    return x * (1 - m) + m


def _pil_resize_masks(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 1, H, W]`` 0..255 masks resized with Pillow's bicubic filter (8-bit), as the official script."""
    out = []
    for plane in m[:, 0].round().clamp(0, 255).to(torch.uint8).cpu().numpy():
        small = Image.fromarray(plane, "L").resize(size, Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(small, dtype=np.float32).copy()))
    return torch.stack(out)[:, None].to(m.device)


#: How far above the eye line the landmark hull reaches, as a multiple of the chin's
#: distance below it (1.0 mirrors the jaw line; 1.25 also covers typical hair volume).
HULL_FOREHEAD_FACTOR = 1.25
#: 5-point ellipse, in eye-to-eye distances D and eye-to-mouth distances E: half-width 1.1 D;
#: chin assumed 1.7 E below the eye line; top at HULL_FOREHEAD_FACTOR times that above it.
_ELLIPSE_HALF_WIDTH = 1.1
_ELLIPSE_CHIN = 1.7


def hull_background_mask(landmarks: Any, size: int, forehead_factor: float = HULL_FOREHEAD_FACTOR) -> torch.Tensor:
    """A model-free background mask from landmarks in aligned pixel coordinates.

    * 68 (or 106) points: convex hull of the points plus the jaw (first 17 points for 68;
      all points for 106) mirrored across the eye line and stretched by ``forehead_factor``, so
      the region reaches ``forehead_factor`` x (chin distance) above the eyes (forehead + hair).
    * 5 points: an ellipse, half-width 1.1 x eye distance, from 1.7 x eye-to-mouth below the eye
      line (chin) to ``forehead_factor`` times that above it.

    Background = outside that region. Unlike ParseNet it also whitens the neck and keeps
    nothing of long hair beyond the region. Use ``method="landmark_hull"`` in
    :func:`whitening_mask` to choose it.

    Args:
        landmarks: ``[68|106|5, 2]`` points in the aligned image's pixel coordinates.
        size: side of the square mask.
        forehead_factor: upward extension, see above.

    Returns:
        float32 ``[size, size]``, 1 = background.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in (5, 68, 106):
        raise LikenessError(f"Landmarks must be [68, 2], [106, 2] or [5, 2]; got {pts.shape}.")
    if pts.shape[0] == 5:
        eye_avg = (pts[0] + pts[1]) / 2
        down = (pts[3] + pts[4]) / 2 - eye_avg
        e2m = float(np.hypot(*down))
        down = down / max(e2m, 1e-9)
        chin = _ELLIPSE_CHIN * e2m
        top = forehead_factor * chin
        half_w = _ELLIPSE_HALF_WIDTH * float(np.hypot(*(pts[1] - pts[0])))
        angle = float(np.arctan2(down[0], -down[1]))  # the ellipse's first axis runs across the face
        centre = eye_avg + down * (chin - top) / 2
        return 1.0 - ellipse_mask(centre, (half_w, (chin + top) / 2), angle, size, size)
    if pts.shape[0] == 68:
        eye_avg = (pts[36:42].mean(0) + pts[42:48].mean(0)) / 2
        mouth_avg = (pts[48] + pts[54]) / 2
        jaw = pts[0:17]
    else:
        eye_avg = (pts[[33, 35, 36, 37, 39, 40, 41, 42]].mean(0) + pts[[87, 89, 90, 91, 93, 94, 95, 96]].mean(0)) / 2
        mouth_avg = (pts[56] + pts[69]) / 2
        jaw = pts
    down = mouth_avg - eye_avg
    down = down / max(float(np.hypot(*down)), 1e-9)
    depth = (jaw - eye_avg) @ down
    mirrored = jaw - np.outer(depth * (1.0 + forehead_factor), down)
    return 1.0 - polygon_mask(np.concatenate([pts, mirrored[depth > 0]]), size, size)


def whitening_mask(
    method: str, image: np.ndarray, *, landmarks: Any = None, parsenet: ParseNet | None = None
) -> torch.Tensor:
    """The background mask of one resolved whitening method (see :func:`.pipeline.resolve_whitening`).

    Args:
        method: ``"parsenet"`` (official), ``"landmark_hull"`` (no model) or ``"none"``.
        image: aligned uint8 ``[S, S, 3]`` face (512 px for ``"parsenet"``).
        landmarks: landmarks in aligned pixel coordinates (``AlignedFace.landmarks``);
            required for ``"landmark_hull"``.
        parsenet: the loaded :class:`ParseNet`; required for ``"parsenet"``.

    Returns:
        float32 ``[S, S]`` mask, 1 = background (all 0 for ``"none"``).

    Raises:
        ValueError: unknown method or a missing landmark/model argument (programming errors).
        LikenessError: ParseNet on a face that is not 512 px (align with the wplus_adapter recipe).
    """
    if method not in WHITENING_METHODS:
        raise ValueError(f"unknown whitening method {method!r}; choose one of {list(WHITENING_METHODS)}")
    size = int(image.shape[0])
    if method == "none":
        return torch.zeros(size, size)
    if method == "landmark_hull":
        if landmarks is None:
            raise ValueError("whitening method 'landmark_hull' needs the face landmarks (in aligned coordinates)")
        logger.info("whitening: landmark-hull background mask (no face-parsing model used)")
        return hull_background_mask(landmarks, size)
    if parsenet is None:
        raise ValueError("whitening method 'parsenet' needs the loaded ParseNet (see pipeline.resolve_whitening)")
    return background_mask(parse_face(parsenet, image)).cpu()
