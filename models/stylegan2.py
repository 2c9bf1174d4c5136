"""StyleGAN2 generator (rosinality layout) in pure PyTorch, for W+ previews.

``Generator(1024)`` is the decoder of e4e (``state_dict.decoder.*`` of
``e4e_ffhq_encode.pt``) and of rosinality's ``stylegan2-ffhq-config-f.pt``
(``g_ema.*``). Names and shapes match those files, so
``load_state_dict(strict=True)`` takes them unchanged.

Synthesis is deterministic: the noise comes from the stored ``noises.noise_i``
buffers (``randomize_noise=False`` in the official code) and the input is
always an extended latent W+ [B, n_latent, 512] (``input_is_latent=True``).
Row semantics (rosinality's layer order): row 0 drives the 4² conv, row 1 the 4² to_rgb,
then per resolution r = 8..size: rows i, i+1 the two convs and row i+2 to_rgb.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .stylegan2_ops import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB

__all__ = ["Generator", "generator_channels"]

logger = logging.getLogger(__name__)

BLUR_KERNEL = (1, 3, 3, 1)


def generator_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution of the rosinality generator."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}


class Generator(nn.Module):
    """rosinality StyleGAN2 generator: mapping MLP ``style`` (z -> w) and synthesis.

    Args:
        size: output resolution, a power of two in 8..1024 (1024 for FFHQ / e4e).
        style_dim: latent width (512).
        n_mlp: number of mapping layers (8).
        channel_multiplier: 2 for config-f (FFHQ 1024).
        lr_mlp: learning-rate multiplier of the mapping layers (0.01).

    Attributes:
        n_latent: number of W+ rows, ``2*log2(size) - 2`` (18 at 1024, 14 at 256).
        num_layers: number of noise buffers, ``2*log2(size) - 3``.
    """

    def __init__(
        self,
        size: int = 1024,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
    ) -> None:
        super().__init__()
        log_size = int(math.log2(size)) if size > 0 else 0
        if size < 8 or 2**log_size != size or size > 1024:
            raise ValueError(f"StyleGAN2 size must be a power of two between 8 and 1024, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.log_size = log_size
        self.channels = generator_channels(channel_multiplier)

        layers: list[nn.Module] = [PixelNorm()]
        layers += [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)]
        self.style = nn.Sequential(*layers)

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=BLUR_KERNEL)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)

        self.num_layers = (log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty in the official model; kept for attribute parity
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))
        in_ch = ch[4]
        for i in range(3, log_size + 1):
            out_ch = ch[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=BLUR_KERNEL))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=BLUR_KERNEL))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.n_latent = log_size * 2 - 2

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [B, 512] -> w [B, 512] (PixelNorm + n_mlp EqualLinear + lrelu)."""
        return self.style(z)

    def noise_buffers(self) -> list[torch.Tensor]:
        """The fixed noise maps ``noises.noise_0..num_layers-1``, each [1, 1, r, r]."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def forward(self, wplus: torch.Tensor, max_resolution: int | None = None) -> torch.Tensor:
        """Synthesize images from W+.

        Args:
            wplus: [B, n_latent, style_dim] extended latent (absolute W+, i.e. e4e
                output + latent_avg), any float dtype; or [B, style_dim] (w, repeated).
            max_resolution: stop early and return the running RGB skip image at this
                resolution (a power of two, 4..size). Cheap previews; it is the
                generator's own coarse image, not a downscale of the full output.
                None = full size.

        Returns:
            [B, 3, r, r] image, nominally in [-1, 1] (not clamped), dtype of the
            weights (or the autocast dtype).
        """
        if wplus.ndim == 2:
            wplus = wplus.unsqueeze(1).expand(-1, self.n_latent, -1)
        if wplus.ndim != 3 or wplus.shape[1] != self.n_latent or wplus.shape[2] != self.style_dim:
            raise ValueError(
                f"W+ for a {self.size}px StyleGAN2 must be [B, {self.n_latent}, {self.style_dim}], "
                f"got {list(wplus.shape)}"
            )
        stop = self.size if max_resolution is None else int(max_resolution)
        if stop < 4 or stop > self.size or 2 ** int(math.log2(stop)) != stop:
            raise ValueError(f"max_resolution must be a power of two in 4..{self.size}, got {max_resolution}")
        param = self.input.input
        w = wplus.to(device=param.device, dtype=param.dtype)
        noise = self.noise_buffers()
        out = self.input(w.shape[0])
        out = self.conv1(out, w[:, 0], noise[0])
        skip = self.to_rgb1(out, w[:, 1])
        res = 4
        i = 1
        for conv_up, conv, noise1, noise2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs, strict=True
        ):
            if res >= stop:
                break
            if res * 2 >= 256 and out.device.type == "cpu":
                # Maps of 256 px and up (128 channels or fewer): oneDNN's convolutions, transposed
                # convolution, blur and 1x1 ToRGB run 1.3-5x faster channels-last (measured on a CPU).
                # Not below: no gain there, and the layers' fixed 512x512 weights would be copied into
                # that layout on every call.
                out = out.contiguous(memory_format=torch.channels_last)
            out = conv_up(out, w[:, i], noise1)
            out = conv(out, w[:, i + 1], noise2)
            skip = to_rgb(out, w[:, i + 2], skip)
            i += 2
            res *= 2
        return skip.contiguous()
