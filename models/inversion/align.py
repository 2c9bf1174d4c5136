"""FFHQ face alignment for e4e inversion (docs/design.md, "Pipeline").

Public API:

* :func:`ffhq_quad` (dlib 68 points), :func:`ffhq_quad_from_5` (5 keypoints),
  :func:`ffhq_quad_from_106` (insightface 106 points): the oriented crop square.
* :class:`AlignRecipe` and the recipes :data:`E4E_OFFICIAL`, :data:`WPLUS_ADAPTER`, :data:`PSTF`.
* :func:`align_face` -> :class:`AlignedFace` (image, quad, aligned->source transform).
* :func:`e4e_input_tensor`: aligned image -> ``[1, 3, 256, 256]`` in ``[-1, 1]``.

Coordinates are pixel indices ``(x, y)`` with pixel centres at integers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import LikenessError
from ..images import to_rgb_uint8

logger = logging.getLogger(__name__)

__all__ = [
    "AlignRecipe",
    "E4E_OFFICIAL",
    "WPLUS_ADAPTER",
    "PSTF",
    "RECIPES",
    "AlignedFace",
    "ffhq_quad",
    "ffhq_quad_from_5",
    "ffhq_quad_from_106",
    "quad_for_landmarks",
    "landmark_kind",
    "align_face",
    "e4e_input_tensor",
]

# insightface 106-point indices PSTF-AttControl's prepare.py averages for the eyes and takes for the mouth.
_LM106_EYE_LEFT = [33, 35, 36, 37, 39, 40, 41, 42]
_LM106_EYE_RIGHT = [87, 89, 90, 91, 93, 94, 95, 96]
_LM106_MOUTH_LEFT, _LM106_MOUTH_RIGHT = 56, 69


@dataclass(frozen=True)
class AlignRecipe:
    """One FFHQ alignment configuration.

    Attributes:
        name: recipe id (``"e4e_official"``, ``"wplus_adapter"``, ``"pstf"``).
        output_size: side of the aligned image in pixels.
        transform_size: side of the intermediate PIL ``QUAD`` transform (``>= output_size``).
        enable_padding: reflect-pad + blur/median blend when the quad leaves the image.
    """

    name: str
    output_size: int
    transform_size: int
    enable_padding: bool


#: e4e's utils/alignment.py: 256 / 256 / padding on.
E4E_OFFICIAL = AlignRecipe("e4e_official", 256, 256, True)
#: w-plus-adapter's script/utils.py: 512 / 4096 / no padding (then parse, whiten, resize 256).
WPLUS_ADAPTER = AlignRecipe("wplus_adapter", 512, 4096, False)
#: PSTF-AttControl's prepare.py: 512 / 512 / padding on (106-point landmarks).
PSTF = AlignRecipe("pstf", 512, 512, True)
RECIPES: dict[str, AlignRecipe] = {r.name: r for r in (E4E_OFFICIAL, WPLUS_ADAPTER, PSTF)}


@dataclass(frozen=True)
class AlignedFace:
    """An aligned face and how to map it back onto the source photo.

    Attributes:
        image: uint8 ``[O, O, 3]`` RGB, ``O = recipe.output_size``.
        quad: float64 ``[4, 2]`` crop square in source pixels (NW, SW, SE, NE corners).
        qsize: side of the quad in source pixels.
        aligned_to_source: float64 ``[3, 3]``; ``source_xy1 = M @ (x, y, 1)`` for aligned pixel
            ``(x, y)``. ``M[:2]`` is the 2x3 matrix for ``kornia.geometry.transform.warp_affine``
            (``align_corners=True``) to paste the aligned image back into the source canvas.
        recipe: recipe name.
        landmark_kind: ``"lm68"``, ``"kps5"`` or ``"lm106"``.
        landmarks: float64 ``[N, 2]`` input landmarks mapped into aligned pixel coordinates.
        shrink: the integer downscale applied before cropping (1 = none).
        working_quad_width: quad width in the (possibly shrunk) working image; the W+ adapter
            skips faces with ``working_quad_width <= 160`` (its ``min_size``).
    """

    image: np.ndarray
    quad: np.ndarray
    qsize: float
    aligned_to_source: np.ndarray
    recipe: str
    landmark_kind: str
    landmarks: np.ndarray
    shrink: int
    working_quad_width: float

    @property
    def source_to_aligned(self) -> np.ndarray:
        """Inverse of :attr:`aligned_to_source`, float64 ``[3, 3]``."""
        return np.linalg.inv(self.aligned_to_source)


def _quad_from_points(
    eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray, mouth_right: np.ndarray
) -> tuple[np.ndarray, float]:
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # x = eye_to_eye - rot90(eye_to_mouth), rot90(v) = (-v_y, v_x)
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = float(np.hypot(*x))
    if not np.isfinite(norm) or norm < 1e-6:
        raise LikenessError(
            f"Degenerate face landmarks (eyes {eye_left.tolist()} / {eye_right.tolist()}, mouth "
            f"{mouth_left.tolist()} / {mouth_right.tolist()}): cannot build the FFHQ crop. "
            "Check that the landmarks belong to a detected face."
        )
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2.0)


def _points(landmarks: Any, n: int, what: str) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (n, 2):
        raise LikenessError(f"{what} must have shape ({n}, 2), got {pts.shape}.")
    if not np.all(np.isfinite(pts)):
        raise LikenessError(f"{what} contain NaN or infinite values: the detector output is unusable.")
    return pts


def ffhq_quad(lm68: Any) -> tuple[np.ndarray, float]:
    """The FFHQ crop square from dlib's 68 landmarks (NVIDIA FFHQ recipe).

    Eyes are the means of points 36-41 and 42-47, mouth corners points 48 and 54.

    Args:
        lm68: ``[68, 2]`` landmarks in source pixels (dlib / iBUG 300-W order).

    Returns:
        ``(quad, qsize)``: float64 ``[4, 2]`` corners NW, SW, SE, NE and the side length.
    """
    lm = _points(lm68, 68, "68-point landmarks")
    return _quad_from_points(lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54])


def ffhq_quad_from_5(kps5: Any) -> tuple[np.ndarray, float]:
    """The FFHQ crop square from 5 keypoints (an approximation of :func:`ffhq_quad`).

    The detector's eye points stand in for the means of the six 68-point eye-contour
    points and its mouth corners for points 48/54. Measured against the dlib ``lm68`` quad
    of the same face on the reference photos (``shared/reference/faces``; max corner
    distance / qsize, centre shift / qsize, qsize ratio, rotation):

    ==================  ======  ================  ======  =====  =======
    photo               kps5    corner max        centre  scale  angle
    ==================  ======  ================  ======  =====  =======
    astronaut           yuface  11.9 px (6.8 %)   1.2 %   1.080  1.4 deg
    astronaut           mtcnn   5.7 px (3.2 %)    0.4 %   0.961  0.6 deg
    grace_hopper        yuface  16.7 px (5.2 %)   1.0 %   0.994  3.4 deg
    grace_hopper        mtcnn   23.6 px (7.3 %)   0.3 %   1.097  -1.3 deg
    camera_profile      yuface  20.9 px (18.8 %)  18.2 %  0.996  0.5 deg
    ==================  ======  ================  ======  =====  =======

    On frontal faces the crop centre agrees within about 1 % and the scale within about
    10 % (the detectors' mouth corners sit lower/wider than dlib's), i.e. up to ~8 % of the
    output size at the corners; the detectors disagree with each other as much. Profile
    faces do not align reliably from 5 points (the centre moves by ~20 %).

    Args:
        kps5: ``[5, 2]`` keypoints: eye on the viewer's left, eye on the viewer's right,
            nose, mouth corner viewer-left, mouth corner viewer-right (yuface, MTCNN,
            insightface, RetinaFace order).

    Returns:
        ``(quad, qsize)`` as :func:`ffhq_quad`.
    """
    k = _points(kps5, 5, "5-point keypoints")
    return _quad_from_points(k[0], k[1], k[3], k[4])


def ffhq_quad_from_106(lm106: Any) -> tuple[np.ndarray, float]:
    """The FFHQ crop square from insightface's 106 points as PSTF-AttControl computes it.

    Eyes: means of points 33,35,36,37,39,40,41,42 and 87,89,90,91,93,94,95,96;
    mouth corners: points 56 and 69.
    """
    lm = _points(lm106, 106, "106-point landmarks")
    return _quad_from_points(
        lm[_LM106_EYE_LEFT].mean(0), lm[_LM106_EYE_RIGHT].mean(0), lm[_LM106_MOUTH_LEFT], lm[_LM106_MOUTH_RIGHT]
    )


def landmark_kind(landmarks: Any) -> str:
    """``"lm68"``, ``"kps5"`` or ``"lm106"`` from the landmark array's shape."""
    shape = np.shape(landmarks)
    kinds = {(68, 2): "lm68", (5, 2): "kps5", (106, 2): "lm106"}
    if shape not in kinds:
        raise LikenessError(
            f"Landmarks must be [68, 2] (dlib), [5, 2] (keypoints) or [106, 2] (insightface), got {shape}."
        )
    return kinds[shape]


def quad_for_landmarks(landmarks: Any) -> tuple[np.ndarray, float, str]:
    """``(quad, qsize, kind)`` for 68, 5 or 106 landmarks."""
    kind = landmark_kind(landmarks)
    func = {"lm68": ffhq_quad, "kps5": ffhq_quad_from_5, "lm106": ffhq_quad_from_106}[kind]
    quad, qsize = func(landmarks)
    return quad, qsize, kind


def _affine(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """3x3 matrix of ``p -> a * p_x + b * p_y + t``."""
    return np.array([[a[0], b[0], t[0]], [a[1], b[1], t[1]], [0.0, 0.0, 1.0]])


def align_face(image: Any, landmarks: Any, recipe: AlignRecipe = E4E_OFFICIAL) -> AlignedFace:
    """Align a face with the FFHQ recipe, exactly as the official PIL/NumPy code does.

    Steps (NVIDIA's FFHQ ``recreate_aligned_images``, used by e4e and the W+ adapter): integer
    shrink with a Lanczos resize, crop around the quad, optional reflect padding blended with a
    blur and the median colour, PIL ``QUAD`` transform (bilinear) of ``quad + 0.5`` to
    ``transform_size`` and a Lanczos resize to ``output_size``. Pillow does every resampling, so the
    image is bit-identical to the official code's (tests/reference).

    Args:
        image: photo; anything :func:`..images.to_rgb_uint8` accepts (PIL, ``[H, W, C]`` uint8, ...).
        landmarks: ``[68, 2]`` dlib, ``[5, 2]`` keypoints or ``[106, 2]`` insightface points in
            source pixels.
        recipe: :data:`E4E_OFFICIAL`, :data:`WPLUS_ADAPTER`, :data:`PSTF` or a custom recipe.

    Returns:
        :class:`AlignedFace`.

    Raises:
        ValueError: recipe sizes out of order (a programming error).
        LikenessError: wrong landmark shape, or degenerate landmarks (eyes and mouth coincide).
    """
    if recipe.output_size < 1 or recipe.transform_size < recipe.output_size:
        raise ValueError(
            f"recipe {recipe.name!r}: need 1 <= output_size <= transform_size, "
            f"got {recipe.output_size} / {recipe.transform_size}"
        )
    img = Image.fromarray(to_rgb_uint8(image))
    src_w, src_h = img.size
    quad0, qsize0, kind = quad_for_landmarks(landmarks)
    img, quad, qsize, shrink = _shrink(img, quad0.copy(), qsize0, recipe.output_size)
    # working index -> source index: the official code divides the quad by the integer shrink,
    # but the image is resized to rint(size / shrink); both are tracked exactly here.
    sx, sy = src_w / img.size[0], src_h / img.size[1]
    work_to_src = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    img, quad, offset, border = _crop(img, quad, qsize)
    working_quad_width = float(quad[:, 0].max() - quad[:, 0].min())
    if recipe.enable_padding:
        img, quad, pad_offset = _pad(img, quad, qsize, border)
        offset = offset - pad_offset
    aligned = img.transform(
        (recipe.transform_size, recipe.transform_size),
        Image.Transform.QUAD,
        (quad + 0.5).flatten(),
        Image.Resampling.BILINEAR,
    )
    if recipe.output_size < recipe.transform_size:
        aligned = aligned.resize((recipe.output_size, recipe.output_size), Image.Resampling.LANCZOS)

    size = recipe.output_size
    nw, sw, ne = quad[0], quad[1], quad[3]
    a, b = (ne - nw) / size, (sw - nw) / size
    aligned_to_working = _affine(a, b, nw + 0.5 * a + 0.5 * b)
    working_to_shrunk = _affine(np.array([1.0, 0.0]), np.array([0.0, 1.0]), offset)
    aligned_to_source = work_to_src @ working_to_shrunk @ aligned_to_working
    inv = np.linalg.inv(aligned_to_source)
    pts = np.asarray(landmarks, dtype=np.float64)
    return AlignedFace(
        image=np.asarray(aligned, dtype=np.uint8).copy(),
        quad=quad0,
        qsize=qsize0,
        aligned_to_source=aligned_to_source,
        recipe=recipe.name,
        landmark_kind=kind,
        landmarks=pts @ inv[:2, :2].T + inv[:2, 2],
        shrink=max(shrink, 1),
        working_quad_width=working_quad_width,
    )


def _shrink(img: Image.Image, quad: np.ndarray, qsize: float, output_size: int):
    """Integer downscale (Lanczos) when the face is over twice the output size: (img, quad, qsize, shrink)."""
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
    return img, quad, qsize, shrink


def _crop(img: Image.Image, quad: np.ndarray, qsize: float):
    """Crop to the quad plus a border of 0.1 qsize: (img, quad, crop offset, border)."""
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        max(int(np.floor(min(quad[:, 0]))) - border, 0),
        max(int(np.floor(min(quad[:, 1]))) - border, 0),
        min(int(np.ceil(max(quad[:, 0]))) + border, img.size[0]),
        min(int(np.ceil(max(quad[:, 1]))) + border, img.size[1]),
    )
    offset = np.zeros(2)
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
        offset += crop[0:2]
    return img, quad, offset, border


def _pad(img: Image.Image, quad: np.ndarray, qsize: float, border: int):
    """The official reflect padding with blur and median blend when the quad leaves the image.

    Returns ``(img, quad, pad offset [2])``; unchanged when no padding is needed. The NumPy
    expressions are the official ones, so the float32 results (and the uint8 image) are identical.
    """
    pad = (
        max(-int(np.floor(min(quad[:, 0]))) + border, 0),
        max(-int(np.floor(min(quad[:, 1]))) + border, 0),
        max(int(np.ceil(max(quad[:, 0]))) - img.size[0] + border, 0),
        max(int(np.ceil(max(quad[:, 1]))) - img.size[1] + border, 0),
    )
    if max(pad) <= border - 4:
        return img, quad, np.zeros(2)
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    logger.debug("align_face: padding %s (qsize %.1f)", pad.tolist(), qsize)
    arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = arr.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(
        1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
        1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
    )
    arr += (gaussian_blur_hw(arr, qsize * 0.02) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
    return img, quad + pad[:2], pad[:2].astype(np.float64)


def gaussian_blur_hw(img: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])`` for a float32 ``[H, W, C]`` array.

    Normalised sampled Gaussian of radius ``int(truncate * sigma + 0.5)``, half-sample symmetric
    borders, rows then columns, each pass accumulated in float64 and stored as float32 (as scipy).
    The convolution runs as an FFT product, which agrees with direct summation to ~1e-12.
    """
    radius = int(truncate * float(sigma) + 0.5)
    if radius < 1:
        return img.copy()
    xs = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / float(sigma) ** 2 * xs**2)
    kernel /= kernel.sum()
    out = img
    for axis in (0, 1):
        n = out.shape[axis]
        widths = [(0, 0)] * out.ndim
        widths[axis] = (radius, radius)
        padded = np.pad(out, widths, mode="symmetric").astype(np.float64)
        length = padded.shape[axis] + 2 * radius
        spec = np.fft.rfft(padded, n=length, axis=axis)
        shape = [1] * out.ndim
        shape[axis] = -1
        spec *= np.fft.rfft(kernel[::-1], n=length).reshape(shape)
        full = np.fft.irfft(spec, n=length, axis=axis)
        out = np.take(full, np.arange(2 * radius, 2 * radius + n), axis=axis).astype(img.dtype)
    return out


def e4e_input_tensor(face: AlignedFace | np.ndarray, recipe: AlignRecipe | str = E4E_OFFICIAL) -> torch.Tensor:
    """The e4e encoder input ``[1, 3, 256, 256]`` float32 in ``[-1, 1]`` for an aligned face.

    * ``e4e_official``: torchvision ``Resize((256, 256))`` on the PIL image (Pillow bilinear;
      a no-op for the 256 px aligned image), ``ToTensor`` (x / 255), ``Normalize(0.5, 0.5)``.
    * ``wplus_adapter``: ``PIL.Image.resize((256, 256))`` (Pillow's default, bicubic) of the
      512 px face, then ``(x - 127.5) / 127.5``. Background whitening is separate
      (:func:`.whitening.whiten_background`, run by :func:`.pipeline.invert_face`).
    * ``pstf``: Pillow bilinear ``Resize(1024)``, ``ToTensor``, ``Normalize(0.5, 0.5)``, then a
      tensor ``Resize((256, 256))`` (bilinear, antialias on as in torchvision >= 0.17;
      [inferred]: PSTF pins no torchvision version).

    Args:
        face: :class:`AlignedFace` or an aligned uint8 ``[H, W, 3]`` image.
        recipe: which pipeline's normalisation to reproduce (recipe or its name).
    """
    name = recipe if isinstance(recipe, str) else recipe.name
    rgb = face.image if isinstance(face, AlignedFace) else to_rgb_uint8(face)
    pil = Image.fromarray(rgb)
    if name == "wplus_adapter":
        arr = np.asarray(pil.resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
        x = (torch.from_numpy(arr.copy()).permute(2, 0, 1) - 127.5) / 127.5
    elif name == "e4e_official":
        if pil.size != (256, 256):
            pil = pil.resize((256, 256), Image.Resampling.BILINEAR)
        x = (torch.from_numpy(np.asarray(pil, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0 - 0.5) / 0.5
    elif name == "pstf":
        w, h = pil.size
        short = min(w, h)
        big = pil.resize((int(w * 1024 / short), int(h * 1024 / short)), Image.Resampling.BILINEAR)
        x = (torch.from_numpy(np.asarray(big, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0 - 0.5) / 0.5
        x = torch.nn.functional.interpolate(
            x[None], size=(256, 256), mode="bilinear", align_corners=False, antialias=True
        )[0]
    else:
        raise LikenessError(f"Unknown alignment recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return x.unsqueeze(0).contiguous()
