"""Samples and the W+ augmentation of the PSTF-AttControl trainer (UnicomAI train_instantId_sdxl_style2-attn.py).

A sample: the aligned training image, its IdentityNet keypoint image (:func:`~..pstf.kps.draw_kps` of the
item's keypoints, which are already in the image's pixels), the antelopev2 embedding, the absolute W+
code and a caption line (or "a person", what the official prepare.py writes). Dropout per sample, one
uniform draw: 5 % identity zeroed, 5 % caption "", 5 % W+ zeroed, 5 % all three (methods.md 4.6).

W+ augmentation (methods.md 4.8): with probability 0.3, unless W+ was dropped, W <- W + U(0.1, 2.5) *
Delta[k] for a PreciseControl key k of :data:`EDIT_KEYS`; the trainer then replaces the target image by
the StyleGAN2 decode of the edited code and re-detects its keypoints (:func:`render_edit_targets`); the
identity embedding stays the photo's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..directions.types import Direction
from ..face.types import FaceAnalyzer
from ..pstf.kps import draw_kps
from .dataset import DatasetItem
from .wplus_data import DEFAULT_CAPTION, to_unit_tensor

__all__ = [
    "EDIT_KEYS",
    "PSTF_DROP_RATES",
    "draw_pstf_drop",
    "pstf_sample",
    "render_edit_targets",
    "kps_tensor",
    "smoke_decode_fn",
    "StyleGANDecoder",
    "PSTFSamples",
]

#: The 16 PreciseControl keys PSTF's training edits with (all_delta_w_dict.json).
EDIT_KEYS = (
    "pose",
    "angry",
    "black",
    "eyesclose",
    "bald",
    "bang",
    "white",
    "lights",
    "yellow",
    "sad",
    "beard",
    "gender",
    "smile",
    "suprise",
    "eyeglasses",
    "eyeg",
)
#: (identity, text, W+, all three), 5 % each.
PSTF_DROP_RATES = (0.05, 0.05, 0.05, 0.05)
EDIT_PROB = 0.3
EDIT_RANGE = (0.1, 2.5)


def draw_pstf_drop(rng: np.random.Generator, rates: Sequence[float] = PSTF_DROP_RATES) -> tuple[bool, bool, bool]:
    """``(drop identity, drop text, drop W+)`` from one uniform draw, as the official dataset."""
    r, (i, t, s, ti) = rng.random(), rates
    if r < i:
        return True, False, False
    if r < i + t:
        return False, True, False
    if r < i + t + s:
        return False, False, True
    if r < i + t + s + ti:
        return True, True, True
    return False, False, False


def kps_tensor(kps: np.ndarray, size: int) -> torch.Tensor:
    """The IdentityNet condition ``[3, S, S]`` in [0, 1] for keypoints in ``size`` px coordinates."""
    return torch.from_numpy(draw_kps((size, size), kps).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def pstf_sample(
    item: DatasetItem,
    rng: np.random.Generator,
    size: int,
    deltas: dict[str, Direction] | None,
    edit_prob: float = EDIT_PROB,
) -> dict[str, Any]:
    """One training sample of ``item`` at ``size`` px (see the module docstring)."""
    drop_id, drop_t, drop_w = draw_pstf_drop(rng)
    aligned = item.image("aligned.png")
    kps = item.tensors["kps"].numpy().astype(np.float64) * (size / aligned.width)
    wplus, embedding = item.tensors["wplus"].clone(), item.tensors["embedding"].clone()
    edit = bool(deltas) and rng.random() < edit_prob and not drop_w
    if edit:
        key = sorted(deltas)[int(rng.integers(len(deltas)))]
        wplus = wplus + float(rng.uniform(*EDIT_RANGE)) * deltas[key].vector
    caption = item.caption[int(rng.integers(len(item.caption)))] if item.caption else DEFAULT_CAPTION
    return {
        "image": to_unit_tensor(aligned, size),
        "kps_image": kps_tensor(kps, size),
        "embedding": torch.zeros_like(embedding) if drop_id else embedding,
        "wplus": torch.zeros_like(wplus) if drop_w else wplus,
        "caption": "" if drop_t else caption,
        "edit": edit,
        "original_size": torch.tensor([aligned.height, aligned.width]),
    }


@dataclass(frozen=True)
class PSTFSamples:
    """The sample maker of a PSTF run (picklable: items, deltas and settings only)."""

    items: Sequence[DatasetItem]
    size: int
    deltas: dict[str, Direction] | None
    edit_prob: float = EDIT_PROB

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        return pstf_sample(self.items[index], rng, self.size, self.deltas, self.edit_prob)

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("image", "kps_image", "embedding", "wplus", "original_size")
        out: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in keys}
        out["caption"] = [s["caption"] for s in samples]
        out["edit"] = torch.tensor([s["edit"] for s in samples])
        return out


def render_edit_targets(
    images: torch.Tensor,
    kps_images: torch.Tensor,
    wplus: torch.Tensor,
    edit: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    analyzer: FaceAnalyzer | None,
) -> int:
    """Replace the edited samples' targets by the decode of their edited W+, in place; returns how many kps moved.

    Args:
        images: ``[B, 3, S, S]`` targets in [-1, 1] (modified in place where ``edit``).
        kps_images: ``[B, 3, S, S]`` IdentityNet images in [0, 1] (redrawn where a face is found).
        wplus: ``[B, 18, 512]`` codes (already edited).
        edit: bool ``[B]``.
        decode: W+ ``[n, 18, 512]`` -> RGB ``[n, 3, r, r]`` in about [-1, 1] (StyleGAN2).
        analyzer: face detector for the keypoints of the decoded faces (official: insightface buffalo_l,
            det 320); None keeps the photo's keypoint image.
    """
    rows = torch.nonzero(edit.to(images.device), as_tuple=True)[0]
    if len(rows) == 0:
        return 0
    size = images.shape[-1]
    with torch.no_grad():
        decoded = decode(wplus[rows]).float().clamp(-1, 1)
        decoded = F.interpolate(decoded, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    images[rows] = decoded.to(images.dtype)
    moved = 0
    if analyzer is None:
        return moved
    pixels = ((decoded + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for row, img in zip(rows.tolist(), pixels, strict=True):
        faces = analyzer.detect(img)
        if faces:
            face = max(faces, key=lambda f: f.area)
            kps_images[row] = kps_tensor(np.asarray(face.kps, np.float64), size).to(kps_images)
            moved += 1
    return moved


def smoke_decode_fn(seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A W+ -> 16 px image stand-in for StyleGAN2 (smoke runs only): a fixed random linear map + tanh."""
    gen = torch.Generator().manual_seed(seed + 99)
    weight = torch.randn(18 * 512, 3 * 16 * 16, generator=gen) / np.sqrt(18 * 512)

    def decode(wplus: torch.Tensor) -> torch.Tensor:
        flat = wplus.reshape(wplus.shape[0], -1).float()
        return torch.tanh(flat @ weight.to(flat.device)).reshape(-1, 3, 16, 16)

    return decode


class StyleGANDecoder:
    """``decode(W+)`` through the StyleGAN2 generator of an e4e checkpoint, built on first use on W+'s device.

    Renders at the smallest power of two >= ``size`` (1024 = the full generator, as PSTF; smaller
    training resolutions stop early) and returns ``[B, 3, r, r]`` in about [-1, 1].

    Args:
        path: ``e4e_ffhq_encode.pt`` (its ``decoder.*`` weights).
        size: the training resolution.
    """

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size, self.generator = path, int(size), None

    def __call__(self, wplus: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            from ..inversion.e4e_model import load_e4e

            inverter = load_e4e(self.path)
            self.generator = inverter.decoder().to(wplus.device, torch.float32)  # the encoder is dropped
        stop = 4
        while stop < min(self.size, 1024):
            stop *= 2
        return self.generator(wplus.float(), max_resolution=stop)
