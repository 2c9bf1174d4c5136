"""InstantID's IdentityNet condition image: the 5 face keypoints drawn as limbs and dots (``draw_kps``).

InstantID draws with OpenCV: four limbs (each eye and mouth corner to the nose)
as filled ellipses ``ellipse2Poly`` + ``fillConvexPoly`` of half-width 4 on a
float canvas, the canvas scaled by 0.6 and truncated to uint8, then a filled
circle of radius 10 (``cv2.circle``, 8-connected) per keypoint; colours R, G, B,
Y, M in keypoint order. OpenCV is not a dependency of this pack, so the three
rasterisers are re-implemented here with OpenCV's integer arithmetic (16.16
fixed point edges, Bresenham outlines, the 1-degree sine table rounded to 7
decimals, round-half-even). The result is identical to OpenCV 5.0 on the public
golden cases (tests/reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["draw_kps", "KPS_COLORS", "ellipse_polygon", "fill_convex_poly", "fill_circle"]

KPS_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
"""RGB colour per keypoint: eye (viewer-left), eye (viewer-right), nose, mouth corners."""
_LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))
_STICK_HALF_WIDTH = 4
_DOT_RADIUS = 10
_LIMB_INTENSITY = 0.6
_XY_SHIFT = 16
_XY_ONE = 1 << _XY_SHIFT


def _sin_table() -> np.ndarray:
    """OpenCV's ``SinTable``: sin of 0..450 degrees, each rounded to 7 decimals, as float32."""
    quarter = [round(math.sin(math.radians(k)), 7) for k in range(91)]
    values = []
    for deg in range(451):
        d = deg % 360
        q, r = divmod(d, 90)
        v = (quarter[r], quarter[90 - r], -quarter[r], -quarter[90 - r])[q]
        values.append(v)
    return np.array(values, dtype=np.float32)


_SIN = _sin_table()


def _round_half_even(v: float) -> int:
    return int(np.rint(v))


def ellipse_polygon(
    center: tuple[int, int], axes: tuple[int, int], angle: int, delta: int = 1
) -> list[tuple[int, int]]:
    """``cv2.ellipse2Poly(center, axes, angle, 0, 360, delta)``: integer points of a full ellipse outline.

    Args:
        center: integer centre (x, y).
        axes: integer half-axes (along the rotated x, along the rotated y).
        angle: rotation in whole degrees.
        delta: angular step in degrees.
    """
    angle = int(angle)
    while angle < 0:
        angle += 360
    while angle > 360:
        angle -= 360
    cos_a, sin_a = float(_SIN[450 - angle]), float(_SIN[angle])
    points: list[tuple[int, int]] = []
    for i in range(0, 360 + delta, delta):
        a = min(i, 360)
        x = axes[0] * float(_SIN[450 - a])
        y = axes[1] * float(_SIN[a])
        pt = (_round_half_even(center[0] + x * cos_a - y * sin_a), _round_half_even(center[1] + x * sin_a + y * cos_a))
        if not points or pt != points[-1]:
            points.append(pt)
    if len(points) == 1:
        points = [tuple(center), tuple(center)]
    return points


def _clip_line(width: int, height: int, p1: list[int], p2: list[int]) -> bool:
    """OpenCV ``clipLine`` (in place); False when the segment misses the image."""
    right, bottom = width - 1, height - 1

    def code(x: int, y: int) -> int:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    def cdiv(a: int, b: int) -> int:  # C integer division (towards zero)
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q

    c1, c2 = code(*p1), code(*p2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            p1[0] += cdiv((a - p1[1]) * (p2[0] - p1[0]), p2[1] - p1[1])
            p1[1] = a
            c1 = (p1[0] < 0) + (p1[0] > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            p2[0] += cdiv((a - p2[1]) * (p2[0] - p1[0]), p2[1] - p1[1])
            p2[1] = a
            c2 = (p2[0] < 0) + (p2[0] > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                p1[1] += cdiv((a - p1[0]) * (p2[1] - p1[1]), p2[0] - p1[0])
                p1[0] = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                p2[1] += cdiv((a - p2[0]) * (p2[1] - p1[1]), p2[0] - p1[0])
                p2[0] = a
                c2 = 0
    return (c1 | c2) == 0


def _line8(img: np.ndarray, pt1: tuple[int, int], pt2: tuple[int, int], color: np.ndarray) -> None:
    """8-connected Bresenham line as OpenCV's ``LineIterator(..., 8, left_to_right=True)``."""
    height, width = img.shape[:2]
    p1, p2 = [int(pt1[0]), int(pt1[1])], [int(pt2[0]), int(pt2[1])]
    if not (0 <= p1[0] < width and 0 <= p2[0] < width and 0 <= p1[1] < height and 0 <= p2[1] < height):
        if not _clip_line(width, height, p1, p2):
            return
    if p2[0] < p1[0]:  # left to right
        p1, p2 = p2, p1
    dx, dy = p2[0] - p1[0], p2[1] - p1[1]
    ystep = -1 if dy < 0 else 1
    dy = abs(dy)
    steep = dy > dx
    if steep:
        dx, dy = dy, dx
    err, plus, minus = dx - 2 * dy, 2 * dx, -2 * dy
    x, y = p1
    for _ in range(dx + 1):
        img[y, x] = color
        diagonal = err < 0
        err += minus + (plus if diagonal else 0)
        if steep:  # major step in y, minor in x
            y += ystep
            x += 1 if diagonal else 0
        else:
            x += 1
            y += ystep if diagonal else 0


def fill_convex_poly(img: np.ndarray, points: Sequence[tuple[int, int]], color: Sequence[float]) -> None:
    """``cv2.fillConvexPoly(img, points, color)`` (8-connected, shift 0), in place on ``[H, W, C]``."""
    height, width = img.shape[:2]
    col = np.asarray(color, dtype=img.dtype)
    v = [(int(x), int(y)) for x, y in points]
    n = len(v)
    prev = v[-1]
    for p in v:  # outline first, as OpenCV does
        _line8(img, prev, p, col)
        prev = p
    ys = [p[1] for p in v]
    xs = [p[0] for p in v]
    ymin, ymax, xmin, xmax = min(ys), max(ys), min(xs), max(xs)
    imin = ys.index(ymin)
    if n < 3 or xmax < 0 or ymax < 0 or xmin >= width or ymin >= height:
        return
    ymax = min(ymax, height - 1)
    half = _XY_ONE >> 1
    edge = [
        {"idx": imin, "di": 1, "x": -_XY_ONE, "dx": 0, "ye": ymin},
        {"idx": imin, "di": n - 1, "x": -_XY_ONE, "dx": 0, "ye": ymin},
    ]
    edges_left = n
    y = ymin
    while True:
        for e in edge:
            if y < e["ye"]:
                continue
            idx0 = e["idx"]
            idx = (idx0 + e["di"]) % n
            while edges_left > 0:
                edges_left -= 1
                ty = v[idx][1]
                if ty > y:
                    xs0, xe0 = v[idx0][0] << _XY_SHIFT, v[idx][0] << _XY_SHIFT
                    num, den = (xe0 - xs0) * 2 + (ty - y), 2 * (ty - y)
                    q = abs(num) // den
                    e.update(ye=ty, dx=q if num >= 0 else -q, x=xs0, idx=idx)
                    break
                idx0, idx = idx, (idx + e["di"]) % n
            else:
                edges_left -= 1
        if edges_left < 0:
            break
        if y >= 0:
            left, right = (1, 0) if edge[0]["x"] > edge[1]["x"] else (0, 1)
            x1 = (edge[left]["x"] + half) >> _XY_SHIFT
            x2 = (edge[right]["x"] + half) >> _XY_SHIFT
            if x2 >= 0 and x1 < width:
                img[y, max(x1, 0) : min(x2, width - 1) + 1] = col
        edge[0]["x"] += edge[0]["dx"]
        edge[1]["x"] += edge[1]["dx"]
        y += 1
        if y > ymax:
            break


def fill_circle(img: np.ndarray, center: tuple[int, int], radius: int, color: Sequence[int]) -> None:
    """``cv2.circle(img, center, radius, color, -1)`` (8-connected midpoint circle), in place on ``[H, W, C]``."""
    height, width = img.shape[:2]
    col = np.asarray(color, dtype=img.dtype)
    cx, cy = int(center[0]), int(center[1])
    err, dx, dy, plus, minus = 0, int(radius), 0, 1, (int(radius) << 1) - 1

    def hline(row: int, xa: int, xb: int) -> None:
        if 0 <= row < height:
            xa, xb = max(xa, 0), min(xb, width - 1)
            if xa <= xb:
                img[row, xa : xb + 1] = col

    while dx >= dy:
        x11, x12, x21, x22 = cx - dx, cx + dx, cx - dy, cx + dy
        y11, y12, y21, y22 = cy - dy, cy + dy, cy - dx, cy + dx
        if x11 < width and x12 >= 0 and y21 < height and y22 >= 0:
            hline(y11, x11, x12)
            hline(y12, x11, x12)
            if x21 < width and x22 >= 0:
                hline(y21, x21, x22)
                hline(y22, x21, x22)
        dy += 1
        err += plus
        plus += 2
        mask = 0 if err <= 0 else -1
        err -= minus & mask
        dx += mask
        minus -= mask & 2


def draw_kps(size_wh: tuple[int, int], kps: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The IdentityNet condition image, identical to InstantID's ``draw_kps``.

    Args:
        size_wh: canvas ``(width, height)`` in pixels (the photo's size; ComfyUI's
            ControlNet resizes the hint to the latent afterwards).
        kps: ``[5, 2]`` keypoints in pixels, order eye viewer-left, eye viewer-right,
            nose, mouth corner viewer-left, mouth corner viewer-right (insightface order).

    Returns:
        ``[H, W, 3]`` uint8 RGB: black background, limbs at 60 % intensity, dots of radius 10.
    """
    width, height = int(size_wh[0]), int(size_wh[1])
    points = np.asarray(kps, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"draw_kps needs 5 finite (x, y) keypoints, got shape {points.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"draw_kps needs a positive canvas size, got {width}x{height}")
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for a, b in _LIMBS:
        x, y = points[[a, b], 0], points[[a, b], 1]
        length = float(((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5)
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        poly = ellipse_polygon((int(np.mean(x)), int(np.mean(y))), (int(length / 2), _STICK_HALF_WIDTH), int(angle))
        fill_convex_poly(canvas, poly, KPS_COLORS[a])
    out = (canvas * _LIMB_INTENSITY).astype(np.uint8)
    for (x, y), color in zip(points, KPS_COLORS, strict=True):
        fill_circle(out, (int(x), int(y)), _DOT_RADIUS, color)
    return out
