"""PSFRGAN's ParseNet: 19-class face parsing of a 512 px aligned face.

The W+ adapter's official script parses the aligned face with this network and
paints background (class 0) and cloth (class 18) white before e4e (see
:mod:`.inversion.whitening`). Architecture written from the description of
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .files.checkpoints import flatten, load_file, validate_shapes

logger = logging.getLogger(__name__)

__all__ = [
    "PARSE_CLASSES",
    "BACKGROUND_CLASSES",
    "PARSENET_FILE",
    "ParseNet",
    "load_parsenet",
    "build_parsenet_checkpoint",
    "parse_face",
    "background_mask",
]

#: PSFRGAN / CelebAMask-HQ class order used by ParseNet (0 = background, 18 = cloth).
PARSE_CLASSES: tuple[str, ...] = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)
#: Classes painted white by the W+ adapter (background and cloth; hair, hat, neck kept).
BACKGROUND_CLASSES: tuple[int, ...] = (0, 18)
PARSENET_FILE = "parse_multi_iter_90000.pth"


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
        if (
            key.endswith("num_batches_tracked")
            and key not in state
            and key[: -len("num_batches_tracked")] + "weight" in state
        ):
            state[key] = value.clone()
    validate_shapes(
        state,
        {k: tuple(v.shape) for k, v in expected.items()},
        what="PSFRGAN ParseNet (19-class face parsing, parse_multi_iter_90000.pth)",
        source=path,
    )
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
        raise InputError(
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
