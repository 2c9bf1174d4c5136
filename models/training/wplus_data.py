"""Samples and W+ perturbations of the W+ adapter trainer (csxmli2016/w-plus-adapter train_face.py / train_wild.py).

Stage 1 (face images): the aligned 512 px crop, the e4e code **with** background, a caption drawn from
13 templates around the word "face" (the official script never reads real captions in stage 1).

Stage 2 (in-the-wild images, text disentanglement): the photo with its face mask, augmented as the
official ``aug_self`` (rotation in [-10, 10] degrees and scale 0.8-1.2 about the upper-centre point -
1.0-1.6 about a higher point for full-body photos -, a random border mode, a resize so the short side
is 512-560 px, a 512 px crop that keeps the face's top-left corner inside), the mask then eroded and
blurred with sizes drawn by face area, colour jitter (brightness/contrast/saturation 0.2), a caption
line of the photo (or "a person"), and the **whitened** e4e code. Every pixel size scales with the
training resolution / 512.

Both stages drop conditions per sample: 5 % W+ -> zeros, 5 % caption -> "", 5 % both.

:func:`perturb_wplus` builds the stage-2 "negative" codes for L_disen (batch shuffle and
extrapolation, scaling, Gaussian noise, one or two attribute directions of strength U(-60, 60)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..directions.edit import ganspace_delta
from ..directions.types import Direction
from .dataset import DatasetItem

__all__ = [
    "FACE_TEMPLATES",
    "DROP_RATES",
    "draw_drop",
    "to_unit_tensor",
    "stage1_sample",
    "stage2_sample",
    "DirectionBank",
    "perturb_wplus",
    "WPlusSamples",
]

FACE_TEMPLATES = (
    "{}",
    "a {}",
    "a photo of a {}",
    "a cropped photo of a {}",
    "the photo of a {}",
    "a depiction of a {}",
    "a close-up photo of a {}",
    "a good photo of a {}",
    "a photography of a {}",
    "a cropped photography of a {}",
    "a close-up photography of a {}",
    "a bright photography of a {}",
    "a good photography of a {}",
)
#: (W+ dropped, text dropped, both dropped), each 5 % (methods.md 3.5).
DROP_RATES = (0.05, 0.05, 0.05)
DEFAULT_CAPTION = "a person"


def draw_drop(rng: np.random.Generator, rates: Sequence[float] = DROP_RATES) -> tuple[bool, bool]:
    """``(drop W+, drop text)`` for one sample, one uniform draw as the official scripts."""
    r = rng.random()
    i, t, ti = rates
    if r < i:
        return True, False
    if r < i + t:
        return False, True
    if r < i + t + ti:
        return True, True
    return False, False


def to_unit_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """torchvision ``Resize(size)`` (bilinear, short side) + centre crop to square, in [-1, 1], ``[3, S, S]``."""
    w, h = img.size
    s = size / min(w, h)
    img = img.convert("RGB").resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1) / 127.5 - 1.0


def stage1_sample(item: DatasetItem, rng: np.random.Generator, size: int) -> dict[str, object]:
    """Aligned face, template caption, un-whitened W+, drop flags."""
    drop_w, drop_t = draw_drop(rng)
    caption = FACE_TEMPLATES[int(rng.integers(len(FACE_TEMPLATES)))].format("face")
    wplus = item.tensors["wplus"]
    return {
        "image": to_unit_tensor(item.image("aligned.png"), size),
        "mask": torch.zeros(1, size, size),
        "caption": "" if drop_t else caption,
        "wplus": torch.zeros_like(wplus) if drop_w else wplus,
        "drop_w": drop_w,
    }


def stage2_sample(item: DatasetItem, rng: np.random.Generator, size: int, fullbody: bool = False) -> dict[str, object]:
    """Augmented photo and face mask, a caption line, whitened W+, drop flags."""
    drop_w, drop_t = draw_drop(rng)
    img = torch.from_numpy(np.asarray(item.image("photo.png").convert("RGB"), np.float32).copy()).permute(2, 0, 1)
    mask = torch.from_numpy(np.asarray(item.image("photo_mask.png").convert("L"), np.float32).copy())[None]
    img, mask = _augment(img / 255.0, mask / 255.0, rng, size, fullbody)
    mask = _erode_blur(mask, rng, size)
    caption = item.caption[int(rng.integers(len(item.caption)))] if item.caption else DEFAULT_CAPTION
    wplus = item.tensors["wplus_whitened"]
    return {
        "image": _jitter(img, rng) * 2.0 - 1.0,
        "mask": mask,
        "caption": "" if drop_t else caption,
        "wplus": torch.zeros_like(wplus) if drop_w else wplus,
        "drop_w": drop_w,
    }


@dataclass(frozen=True)
class WPlusSamples:
    """The sample maker of a W+ run (picklable: items and settings only)."""

    items: Sequence[DatasetItem]
    stage: int
    size: int
    fullbody: bool = False

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, object]:
        item = self.items[index]
        return (
            stage1_sample(item, rng, self.size)
            if self.stage == 1
            else stage2_sample(item, rng, self.size, self.fullbody)
        )

    @staticmethod
    def collate(samples: list[dict[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {k: torch.stack([s[k] for s in samples]) for k in ("image", "mask", "wplus")}
        out["caption"] = [s["caption"] for s in samples]
        out["drop_w"] = torch.tensor([s["drop_w"] for s in samples])
        return out


def _augment(
    img: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, size: int, fullbody: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/scale about the upper centre, resize the short side to [size, 1.09 size], crop size px."""
    _, h, w = img.shape
    centre = (w / 2, h / 12) if fullbody else (w / 2, h / 4)
    scale = (rng.integers(10, 17) if fullbody else rng.integers(8, 13)) / 10.0
    angle = np.deg2rad(float(rng.integers(-10, 11)))
    a, b = scale * np.cos(angle), scale * np.sin(angle)  # cv2.getRotationMatrix2D convention
    m = torch.tensor([[a, b, (1 - a) * centre[0] - b * centre[1]], [-b, a, b * centre[0] + (1 - a) * centre[1]]])
    pad = ("reflection", "zeros")[int(rng.integers(2))]
    warp = kornia.geometry.transform.warp_affine
    img = warp(img[None], m[None].float(), (h, w), mode="bilinear", padding_mode=pad, align_corners=False)[0]
    mask = warp(mask[None], m[None].float(), (h, w), mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    short = int(rng.integers(size, size * 560 // 512 + 1)) / min(h, w)
    new = (max(size, int(h * short)), max(size, int(w * short)))
    img = F.interpolate(img[None], size=new, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None], size=new, mode="nearest")[0]
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    h0, w0 = new
    if len(xs):  # keep the face's top-left corner inside the crop, as the official offsets do
        max_x = min(max(int(xs.min()), 1), w0 - size + 1)
        max_y = min(min(max(int(ys.min()), 1), h0 // 12), h0 - size + 1)
    else:
        max_x, max_y = w0 - size + 1, h0 - size + 1
    left, top = int(rng.integers(max(1, max_x))), int(rng.integers(max(1, max_y)))
    return img[:, top : top + size, left : left + size], mask[:, top : top + size, left : left + size]


#: (face-area threshold on the 0..255 mean, erosion range, blur-kernel range) at 512 px, from train_wild.py.
_ERODE_TABLE = (
    (200, (150, 180), (60, 80)),
    (120, (110, 160), (60, 80)),
    (80, (100, 120), (40, 60)),
    (50, (80, 110), (30, 50)),
    (30, (40, 80), (20, 40)),
    (20, (20, 50), (10, 20)),
    (-1, (10, 30), (10, 20)),
)


def _erode_blur(mask: torch.Tensor, rng: np.random.Generator, size: int) -> torch.Tensor:
    """Erode the face mask by a square and blur it (OpenCV sigma for the kernel), sizes by face area."""
    area = float(mask.mean()) * 255.0
    _, erode_r, blur_r = next(row for row in _ERODE_TABLE if area > row[0])
    k = size / 512.0
    erode = max(1, round(int(rng.integers(erode_r[0], erode_r[1] + 1)) * k))
    blur = max(1, round(int(rng.integers(blur_r[0], blur_r[1] + 1)) * k)) | 1
    padded = F.pad(-mask[None], (erode // 2, erode - 1 - erode // 2) * 2, value=-1.0)
    eroded = -F.max_pool2d(padded, erode, stride=1)
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    return kornia.filters.gaussian_blur2d(eroded, (blur, blur), (sigma, sigma), border_type="reflect")[0]


def _jitter(img: torch.Tensor, rng: np.random.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s], in random order (hue 0)."""
    grey_w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    for op in rng.permutation(3):
        f = float(rng.uniform(1 - strength, 1 + strength))
        if op == 0:
            img = img * f
        elif op == 1:
            img = (img - (img * grey_w).sum(0).mean()) * f + (img * grey_w).sum(0).mean()
        else:
            grey = (img * grey_w).sum(0, keepdim=True)
            img = (img - grey) * f + grey
        img = img.clamp(0, 1)
    return img


@dataclass(frozen=True)
class DirectionBank:
    """The stage-2 augmentation directions: linear ``[18,512]`` offsets and GANSpace edits."""

    linear: tuple[Direction, ...]
    ganspace: tuple[Direction, ...]

    def offset(self, w: torch.Tensor, gen: torch.Generator, max_strength: float = 60.0) -> torch.Tensor:
        """One random edit offset per code of ``w`` ``[B,18,512]`` (train_wild.py ``get_w_direction``)."""
        out = []
        for code in w:
            pick = float(torch.rand((), generator=gen, device=gen.device))
            strength = (float(torch.rand((), generator=gen, device=gen.device)) * 2 - 1) * max_strength
            use_linear = pick > 0.4 if self.ganspace else True
            pool = self.linear if use_linear and self.linear else self.ganspace
            d = pool[int(torch.randint(len(pool), (), generator=gen, device=gen.device))]
            if d.kind == "ganspace":
                g = d.ganspace
                out.append(ganspace_delta(code, g.pca, g.pca_idx, g.start, g.end, strength))
            else:
                out.append(d.vector.to(code) * strength)
        return torch.stack(out)


def perturb_wplus(
    w: torch.Tensor, drop: torch.Tensor, gen: torch.Generator, bank: DirectionBank | None
) -> torch.Tensor:
    """The perturbed codes of L_disen, one disturbance type per batch (train_wild.py).

    u > 0.55: shuffled batch extrapolated toward the true codes by U(-40, 40); u > 0.48: shuffled +
    true x k/10, k in [-60, 60]; u > 0.35: shuffled + N(mean, std of the batch) x k/10, k in [-80, 80];
    u > 0.2: true + one direction; else true + a mix of two directions. Without a bank the
    direction types use the noise type instead. Dropped codes stay zero.

    Args:
        w: ``[B,18,512]`` codes (zeros where dropped).
        drop: bool ``[B]``, the W+-dropped samples.
        gen: the step's generator (on ``w.device``).
        bank: augmentation directions, or None.
    """
    ori = w.detach()
    perm = torch.randperm(w.shape[0], generator=gen, device=gen.device).to(w.device)
    shuffled = ori[perm]
    u = float(torch.rand((), generator=gen, device=gen.device))

    def rint(lo: int, hi: int) -> float:
        return float(torch.randint(lo, hi + 1, (), generator=gen, device=gen.device))

    if u <= 0.35 and bank is None:
        u = 0.4
    if u > 0.55:
        neg = shuffled + (ori - shuffled) * (float(torch.rand((), generator=gen, device=gen.device)) * 80 - 40)
    elif u > 0.48:
        neg = shuffled + ori * rint(-60, 60) / 10.0
    elif u > 0.35:
        noise = torch.randn(ori.shape, generator=gen, device=gen.device).to(ori) * ori.std() + ori.mean()
        neg = shuffled + noise * rint(-80, 80) / 10.0
    elif u > 0.2:
        neg = ori + bank.offset(ori, gen)
    else:
        alpha = float(torch.rand((), generator=gen, device=gen.device))
        neg = ori + alpha * bank.offset(ori, gen) + (1 - alpha) * bank.offset(ori, gen)
    return torch.where(drop.view(-1, 1, 1).to(neg.device), torch.zeros_like(neg), neg)
