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

``grow`` (pixels; negative shrinks) is an exact disk dilation/erosion of the binarised mask (> 0.5)
done with an FFT convolution (kornia's morphology needs seconds for radii > 10 px on 512²);
``feather`` (pixels) is a kornia Gaussian blur with sigma = feather / 3, so the edge ramps
over about ``2 * feather`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from kornia.filters import gaussian_blur2d

from ..errors import LikenessError
from .types import Face

__all__ = [
    "REGIONS",
    "polygon_mask",
    "ellipse_mask",
    "face_region_mask",
    "part_masks",
    "grow_mask",
    "feather_mask",
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


def _grid(height: int, width: int, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32, device=device).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, -1)
    return xs, ys


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; returns hull vertices ``[K,2]`` (K >= 1)."""
    pts = sorted({(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64)})
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def polygon_mask(
    points: np.ndarray | Sequence, height: int, width: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Binary float mask ``[H, W]`` of the convex hull of ``points`` ``[N, 2]`` (N >= 3)."""
    hull = _convex_hull(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    mask = torch.zeros(height, width, dtype=torch.float32, device=device)
    if len(hull) < 3:
        return mask
    xs, ys = _grid(height, width, device)
    inside = torch.ones(height, width, dtype=torch.bool, device=device)
    for i in range(len(hull)):
        (x0, y0), (x1, y1) = hull[i], hull[(i + 1) % len(hull)]
        # the hull is counter-clockwise in (x, y): interior on the left (cross >= 0)
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= -1e-6
    return mask.masked_fill_(inside, 1.0)


def ellipse_mask(
    center: Sequence[float],
    axes: Sequence[float],
    angle: float,
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Binary float mask ``[H, W]`` of an ellipse.

    Args:
        center: ``(x, y)`` pixels. axes: semi-axes ``(a, b)`` in pixels along the rotated x and y.
        angle: rotation of the ``a`` axis from the image x axis, radians (clockwise on screen).
    """
    a, b = max(float(axes[0]), 1e-3), max(float(axes[1]), 1e-3)
    xs, ys = _grid(height, width, device)
    dx, dy = xs - float(center[0]), ys - float(center[1])
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    return ((u * u + v * v) <= 1.0).to(torch.float32)


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


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    return ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius * radius + 0.5 * radius).to(torch.float32)


def _dilate(binary: torch.Tensor, radius: int) -> torch.Tensor:
    h, w = binary.shape[-2:]
    k = 2 * radius + 1
    size = (h + k - 1, w + k - 1)
    spec = torch.fft.rfft2(binary, s=size) * torch.fft.rfft2(_disk(radius, binary.device), s=size)
    out = torch.fft.irfft2(spec, s=size)[..., radius : radius + h, radius : radius + w]
    return (out > 0.5).to(torch.float32)


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (``pixels`` > 0) or erode (< 0) by a disk of radius ``|pixels|``; input ``[H,W]`` or ``[B,H,W]``.

    The mask is binarised at 0.5 first; the result is binary float32 of the same shape. Areas
    outside the image count as empty (erosion shrinks masks that touch the border too).
    """
    pixels = int(round(pixels))
    binary = (mask > 0.5).to(torch.float32)
    if pixels == 0:
        return binary
    if pixels > 0:
        return _dilate(binary, pixels)
    padded = torch.nn.functional.pad(1.0 - binary, (1, 1, 1, 1), value=1.0)
    return (1.0 - _dilate(padded, -pixels))[..., 1:-1, 1:-1]


def feather_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften edges with a Gaussian blur (sigma = pixels / 3); ``[H,W]`` or ``[B,H,W]``; result in [0, 1]."""
    if pixels <= 0:
        return mask.clamp(0.0, 1.0)
    sigma = float(pixels) / 3.0
    k = 2 * math.ceil(3.0 * sigma) + 1
    x = mask.to(torch.float32)
    squeeze = x.dim() == 2
    x4 = x.view(1, 1, *x.shape) if squeeze else x.unsqueeze(1)
    out = gaussian_blur2d(x4, (k, k), (sigma, sigma), border_type="replicate")
    out = out.view(*x.shape) if squeeze else out.squeeze(1)
    return out.clamp(0.0, 1.0)


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
