"""e4e encoder (``Encoder4Editing``): IR-SE-50 backbone + FPN + 18 GradualStyleBlocks.

A pure-PyTorch port of omertov/encoder4editing ``models/encoders/psp_encoders.py``
(docs/design.md, 'File formats'). Parameter names equal the official checkpoint's
``state_dict.encoder.*`` keys with that prefix stripped, so
``load_state_dict(strict=True)`` takes the released ``e4e_ffhq_encode.pt``
weights. No custom CUDA op is used or imported.

Input: RGB [B, 3, 256, 256] in [-1, 1] (FFHQ-aligned face). Output: W+ offsets
[B, 18, 512] **without** ``latent_avg`` (add it to get an absolute W+ code; see
:mod:`.inversion`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2_ops import EqualLinear

__all__ = ["Encoder4Editing", "GradualStyleBlock", "BottleneckIRSE", "SEModule", "ir_se50_units", "run_body"]

# (in_channel, depth, stride) of the 24 IR-SE-50 units: stages (3, 4, 14, 3).
_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
_TAP_C1, _TAP_C2, _TAP_C3 = 6, 20, 23  # body units feeding the FPN
_COARSE, _MIDDLE = 3, 7  # styles [0,3) read c3 (16²), [3,7) p2 (32²), [7,18) p1 (64²)


def ir_se50_units() -> list[tuple[int, int, int]]:
    """``(in_channel, depth, stride)`` for each of the 24 body units (first of a stage has stride 2)."""
    units = []
    for in_c, depth, n in _STAGES:
        units.append((in_c, depth, 2))
        units += [(depth, depth, 1)] * (n - 1)
    return units


def run_body(units: Iterable[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the 24 body units on ``x`` and return the FPN taps ``(c1, c2, c3)`` (outputs of units 6, 20, 23)."""
    c1 = c2 = x
    for idx, unit in enumerate(units):
        x = unit(x)
        if idx == _TAP_C1:
            c1 = x
        elif idx == _TAP_C2:
            c2 = x
    return c1, c2, x


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))); ``fc1``/``fc2`` 1x1 bias-free."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: ``shortcut(x) + res_layer(x)``.

    ``res_layer`` = BN -> Conv3x3 -> PReLU -> Conv3x3(stride) -> BN -> SE (indices 0..5);
    ``shortcut_layer`` = MaxPool(1, stride) when in == depth, else Conv1x1(stride) + BN.
    """

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.shortcut_layer, nn.MaxPool2d):
            # MaxPool2d(kernel 1, stride s) is a plain subsampling: slice instead (same values, no index tensor)
            shortcut = x[:, :, :: self.stride, :: self.stride]
        else:
            shortcut = self.shortcut_layer(x)
        return shortcut + self.res_layer(x)


class GradualStyleBlock(nn.Module):
    """Conv3x3 stride 2 + LeakyReLU(0.01), repeated log2(spatial) times down to 1x1, then EqualLinear.

    ``convs`` holds Conv2d at even indices (0, 2, ...) and LeakyReLU at odd ones;
    ``linear`` is an :class:`EqualLinear` (stored weight unscaled).
    """

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        num_pools = int(math.log2(spatial))
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_c, S, S] -> [B, out_c]."""
        x = self.convs(x)
        return self.linear(x.reshape(-1, self.out_c))


class Encoder4Editing(nn.Module):
    """e4e encoder for a StyleGAN2 of ``stylegan_size`` (1024 -> 18 W+ rows).

    Args:
        stylegan_size: generator resolution; ``style_count = 2*log2(size) - 2``.

    The module is built for inference (progressive stage "Inference": all
    style blocks active). Call ``eval()`` before use: BatchNorm uses running
    statistics only in eval mode.
    """

    def __init__(self, stylegan_size: int = 1024) -> None:
        super().__init__()
        log_size = int(math.log2(stylegan_size))
        if 2**log_size != stylegan_size or log_size < 3:
            raise ValueError(f"stylegan_size must be a power of two >= 8, got {stylegan_size}")
        self.style_count = 2 * log_size - 2
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        )
        self.body = nn.Sequential(*[BottleneckIRSE(i, d, s) for i, d, s in ir_se50_units()])
        styles = []
        for i in range(self.style_count):
            spatial = 16 if i < _COARSE else (32 if i < _MIDDLE else 64)
            styles.append(GradualStyleBlock(512, 512, spatial))
        self.styles = nn.ModuleList(styles)
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bilinear (align_corners=True) upsampling of x to y's size, plus y."""
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone and FPN features for debugging and parity tests.

        Returns:
            ``input_layer`` [B,64,256,256], ``c1`` [B,128,64,64], ``c2`` [B,256,32,32],
            ``c3`` [B,512,16,16], ``p2`` [B,512,32,32], ``p1`` [B,512,64,64] and
            ``body`` (list of the 24 unit outputs).
        """
        out: dict[str, torch.Tensor] = {}
        body: list[torch.Tensor] = []
        x = self.input_layer(x)
        out["input_layer"] = x
        for unit in self.body:
            x = unit(x)
            body.append(x)
        out["body"] = body  # type: ignore[assignment]
        out["c1"], out["c2"], out["c3"] = body[_TAP_C1], body[_TAP_C2], body[_TAP_C3]
        out["p2"] = self._upsample_add(out["c3"], self.latlayer1(out["c2"]))
        out["p1"] = self._upsample_add(out["p2"], self.latlayer2(out["c1"]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, 256, 256] in [-1, 1] -> W+ offsets [B, style_count, 512] (no latent_avg).

        Row 0 is ``w0 = styles[0](c3)``; row i (i >= 1) is ``w0 + styles[i](features_i)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"e4e expects images [B, 3, 256, 256] in [-1, 1], got {list(x.shape)}")
        c1, c2, c3 = run_body(self.body, self.input_layer(x))
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        p2 = c3
        for i in range(1, self.style_count):
            if i == _COARSE:
                p2 = self._upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == _MIDDLE:
                features = self._upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)
