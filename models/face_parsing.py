"""Face parsing and background whitening before W+ adapter inversion (docs/methods.md 3.1).

The W+ adapter's stage-2 model was trained on e4e codes of faces whose background
was painted white. The official script parses the 512 px aligned face with
PSFRGAN's ParseNet (19 classes), marks background (0) and cloth (18), blurs that
mask with ``cv2.GaussianBlur(mask, (5, 5), 0)``, resizes it to 256 with Pillow's
default (bicubic) filter and composites ``x * (1 - M) + M`` on the e4e input.

Fallbacks are explicit user choices (:func:`whitening_mask` ``method``):
``"parsenet"`` (the official network; needs ``parse_multi_iter_90000.pth`` in the
``face_parsing`` folder), ``"landmark_hull"`` (a geometric mask from landmarks,
no model) and ``"none"`` (no whitening).

Architecture of :class:`ParseNet` written from the description of
chaofengc/PSFRGAN ``models/networks.py`` (``ParseNet``) and ``models/blocks.py``
(``ConvLayer``, ``ResidualBlock``, ``NormLayer``) read at commit
10c4c8c85bc59ff7071ad27f789cf32ea11ed909, configured as the W+ adapter does
(csxmli2016/w-plus-adapter ``script/ProcessWildImage.py``): 512 in, 512 out,
min feature size 32, base 64 channels, 19 classes, BatchNorm, LeakyReLU(0.2),
channels clipped to [32, 256], 10 body blocks. Parameter names follow the
official state dict so ``parse_multi_iter_90000.pth`` loads strictly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoints import flatten, load_file, validate_shapes
from .pil_resample import pil_resize
from .registry import find_file

logger = logging.getLogger(__name__)

__all__ = [
    "PARSE_CLASSES",
    "BACKGROUND_CLASSES",
    "PARSENET_FILE",
    "WHITENING_METHODS",
    "ParseNet",
    "load_parsenet",
    "build_parsenet_checkpoint",
    "parse_face",
    "background_mask",
    "whiten_background",
    "hull_background_mask",
    "whitening_mask",
]

#: PSFRGAN / CelebAMask-HQ class order used by ParseNet (methods.md 3.1).
PARSE_CLASSES: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
#: Classes painted white by the W+ adapter (background and cloth; hair, hat, neck kept).
BACKGROUND_CLASSES: tuple[int, ...] = (0, 18)
PARSENET_FILE = "parse_multi_iter_90000.pth"
WHITENING_METHODS: tuple[str, ...] = ("parsenet", "landmark_hull", "none")


class _Norm(nn.Module):
    """Holds the normalisation as ``.norm`` (the official ``NormLayer`` nesting)."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _ConvUnit(nn.Module):
    """[nearest x2] -> reflection pad -> 3x3 conv (stride 2 for "down") -> [BN] -> [LeakyReLU 0.2]."""

    def __init__(self, c_in: int, c_out: int, scale: str = "none", batch_norm: bool = False, act: bool = False):
        super().__init__()
        self.upsample = scale == "up"
        self.conv2d = nn.Conv2d(c_in, c_out, 3, 2 if scale == "down" else 1, bias=not batch_norm)
        self.norm = _Norm(c_out, batch_norm)
        self.act = nn.LeakyReLU(0.2) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return self.act(self.norm(self.conv2d(x)))


class _ResBlock(nn.Module):
    """``shortcut(x) + conv2(conv1(x))``; the shortcut is a plain conv unit when shape changes."""

    def __init__(self, c_in: int, c_out: int, scale: str = "none") -> None:
        super().__init__()
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.shortcut_func = nn.Identity() if scale == "none" and c_in == c_out else _ConvUnit(c_in, c_out, scale)
        self.conv1 = _ConvUnit(c_in, c_out, first, batch_norm=True, act=True)
        self.conv2 = _ConvUnit(c_out, c_out, second, batch_norm=True, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """PSFRGAN ParseNet: encoder (4 stride-2 residual blocks) + 10 residual blocks + decoder.

    Args:
        in_size: input side (512 for the official weights).
        out_size: output side.
        min_feat_size: bottleneck side (32).
        base_ch: channels after the first conv (64).
        parsing_ch: number of classes (19).
        res_depth: body residual blocks (10).
        ch_range: channel clip ``(min, max)`` ((32, 256)).

    Forward: ``x`` float ``[B, 3, in, in]`` in ``[-1, 1]`` -> ``(logits [B, 19, out, out],
    image [B, 3, out, out])`` (the second head is PSFRGAN's auxiliary reconstruction).
    """

    def __init__(
        self,
        in_size: int = 512,
        out_size: int = 512,
        min_feat_size: int = 32,
        base_ch: int = 64,
        parsing_ch: int = 19,
        res_depth: int = 10,
        ch_range: tuple[int, int] = (32, 256),
    ) -> None:
        super().__init__()
        lo, hi = ch_range

        def clip(c: int) -> int:
            return max(lo, min(c, hi))

        min_feat_size = min(in_size, min_feat_size)
        down_steps = int(math.log2(in_size // min_feat_size))
        up_steps = int(math.log2(out_size // min_feat_size))
        head = base_ch
        encoder: list[nn.Module] = [_ConvUnit(3, base_ch)]
        for _ in range(down_steps):
            encoder.append(_ResBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        body = [_ResBlock(clip(head), clip(head)) for _ in range(res_depth)]
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(_ResBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*body)
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = _ConvUnit(clip(head), 3)
        self.out_mask_conv = _ConvUnit(clip(head), parsing_ch)
        self.in_size = in_size
        self.parsing_ch = parsing_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encoder(x)
        x = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(x), self.out_img_conv(x)


def _prepare_state(raw: Any, source: str | Path) -> dict[str, torch.Tensor]:
    state = flatten(raw)
    for wrapper in ("state_dict", "params", "model"):
        if state and all(k.startswith(wrapper + ".") for k in state):
            state = {k[len(wrapper) + 1 :]: v for k, v in state.items()}
    if state and all(k.startswith("module.") for k in state):
        logger.info("ParseNet: stripping the DataParallel 'module.' prefix of %s", source)
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_parsenet(path: str | Path, device: torch.device | str = "cpu") -> ParseNet:
    """Load ``parse_multi_iter_90000.pth`` (or an equivalent safetensors) into :class:`ParseNet`.

    Keys and shapes are validated against the module's own state dict; only missing
    ``num_batches_tracked`` counters (not weights) are tolerated.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable file or not a 19-class PSFRGAN ParseNet.
    """
    net = ParseNet()
    expected = net.state_dict()
    state = _prepare_state(load_file(path), path)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state and key[: -len("num_batches_tracked")] + "weight" in state:
            state[key] = value.clone()
    validate_shapes(state, {k: tuple(v.shape) for k, v in expected.items()},
                    what="PSFRGAN ParseNet (19-class face parsing, parse_multi_iter_90000.pth)", source=path)
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def build_parsenet_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic state dict in the official layout (random weights, plausible BN stats)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in ParseNet().state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(90000, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("norm.norm.weight"):
            out[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=gen)
        else:
            fan_in = max(1, value[0].numel()) if value.ndim > 1 else 1
            out[key] = torch.randn(value.shape, generator=gen) / math.sqrt(fan_in)
    return out


def parse_face(net: ParseNet, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-pixel class labels of an aligned 512 px face.

    Args:
        net: a loaded :class:`ParseNet` (eval mode).
        image: uint8 ``[512, 512, 3]`` RGB (converted with ToTensor + Normalize(0.5, 0.5) as
            the W+ adapter does) or float ``[B, 3, 512, 512]`` already in ``[-1, 1]``.

    Returns:
        int64 labels ``[512, 512]`` for a uint8 image, ``[B, 512, 512]`` for a tensor batch
        (class order :data:`PARSE_CLASSES`), on the net's device.
    """
    single = isinstance(image, np.ndarray)
    if single:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        x = (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
        x = x[None]
    else:
        x = image
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (net.in_size, net.in_size):
        raise ValueError(
            f"ParseNet needs [B, 3, {net.in_size}, {net.in_size}] input (the W+ adapter's 512 px aligned "
            f"face); got {tuple(x.shape)}. Align with the 'wplus_adapter' recipe first."
        )
    param = next(net.parameters())
    with torch.no_grad():
        logits, _ = net(x.to(device=param.device, dtype=param.dtype))
    labels = logits.argmax(dim=1)
    return labels[0] if single else labels


def background_mask(labels: torch.Tensor, classes: Sequence[int] = BACKGROUND_CLASSES) -> torch.Tensor:
    """float32 mask, 1 where ``labels`` is background or cloth (default), else 0; same shape."""
    mask = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for c in classes:
        mask[labels == c] = 1.0
    return mask


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
        m = pil_resize(m, (x.shape[-1], x.shape[-2]), "bicubic")
    m = (m / 255.0).to(x.dtype)
    if m.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"mask batch {m.shape[0]} does not match image batch {x.shape[0]}")
    return x * (1 - m) + m


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull (Andrew's monotone chain) of ``[N, 2]`` points."""
    pts = np.unique(points, axis=0)
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2 and _cross(chain[-1] - chain[-2], p - chain[-2]) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


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
        raise ValueError(f"landmarks must be [68, 2], [106, 2] or [5, 2], got {pts.shape}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if pts.shape[0] == 5:
        eye_avg = (pts[0] + pts[1]) / 2
        mouth_avg = (pts[3] + pts[4]) / 2
        down = mouth_avg - eye_avg
        e2m = float(np.hypot(*down))
        down = down / max(e2m, 1e-9)
        side = np.array([-down[1], down[0]])
        half_w = _ELLIPSE_HALF_WIDTH * float(np.hypot(*(pts[1] - pts[0])))
        chin = _ELLIPSE_CHIN * e2m
        top = forehead_factor * chin
        centre = eye_avg + down * (chin - top) / 2
        half_h = (chin + top) / 2
        dx, dy = xx - centre[0], yy - centre[1]
        a = (dx * side[0] + dy * side[1]) / half_w
        b = (dx * down[0] + dy * down[1]) / half_h
        inside = a * a + b * b <= 1.0
    else:
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
        hull = _convex_hull(np.concatenate([pts, mirrored[depth > 0]]))
        inside = np.ones((size, size), dtype=bool)
        for p, q in zip(hull, np.roll(hull, -1, axis=0), strict=True):
            inside &= (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0]) >= 0
    return torch.from_numpy((~inside).astype(np.float32))


def whitening_mask(
    method: str,
    image: np.ndarray,
    *,
    landmarks: Any = None,
    parsenet: ParseNet | None = None,
    search_paths: Mapping[str, Sequence[Path]] | None = None,
) -> tuple[torch.Tensor, str]:
    """The background mask for whitening, by an explicit user choice.

    Args:
        method: ``"parsenet"`` (official), ``"landmark_hull"`` (no model) or ``"none"``.
        image: aligned uint8 ``[S, S, 3]`` face (512 px for ``"parsenet"``).
        landmarks: landmarks in aligned pixel coordinates (``AlignedFace.landmarks``);
            required for ``"landmark_hull"``.
        parsenet: a loaded :class:`ParseNet`; when None, ``parse_multi_iter_90000.pth`` is
            looked up in the ``face_parsing`` folders of ``search_paths`` and loaded.
        search_paths: ``{folder key: [directories]}`` (see :mod:`.registry`).

    Returns:
        ``(mask, method_used)``: float32 ``[S, S]`` mask (1 = background) and the method.

    Raises:
        ValueError: unknown method, or no landmarks for ``"landmark_hull"``.
        MissingModelError: ``"parsenet"`` without a model and no file found (lists the folders
            searched and where to download it; ``"landmark_hull"`` works without it).
    """
    if method not in WHITENING_METHODS:
        raise ValueError(f"unknown whitening method {method!r}; choose one of {list(WHITENING_METHODS)}")
    size = int(image.shape[0])
    if method == "none":
        return torch.zeros(size, size), "none"
    if method == "landmark_hull":
        if landmarks is None:
            raise ValueError("whitening method 'landmark_hull' needs the face landmarks (in aligned coordinates)")
        logger.info("whitening: landmark-hull background mask (no face-parsing model used)")
        return hull_background_mask(landmarks, size), "landmark_hull"
    if parsenet is None:
        parsenet = load_parsenet(find_file("face_parsing", PARSENET_FILE, search_paths or {}))
    labels = parse_face(parsenet, image)
    return background_mask(labels).cpu(), "parsenet"
