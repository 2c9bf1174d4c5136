"""Pure-PyTorch StyleGAN2 building blocks (rosinality layout), no CUDA extension.

The official e4e repository JIT-compiles ``fused_leaky_relu`` and ``upfirdn2d``
with nvcc at import time. Here both are plain PyTorch, so they run on CPU, CUDA
and MPS and under autocast. Parameter and buffer names follow rosinality's
``model.py`` exactly, so its state dicts load with ``strict=True``.

Shapes use B = batch, C = channels, H/W = spatial size in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "fused_leaky_relu",
    "upfirdn2d",
    "conv_transpose_stride2",
    "stride2_phase_kernels",
    "make_kernel",
    "PixelNorm",
    "EqualLinear",
    "FusedLeakyReLU",
    "Upsample",
    "Blur",
    "ModulatedConv2d",
    "NoiseInjection",
    "ConstantInput",
    "StyledConv",
    "ToRGB",
]

_SQRT2 = math.sqrt(2.0)


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, scale: float = _SQRT2
) -> torch.Tensor:
    """``leaky_relu(x + bias, slope) * scale`` with ``bias`` [C] broadcast over dim 1.

    Args:
        x: [B, C] or [B, C, H, W].
        bias: [C].
    """
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    b = bias.view(shape).to(x.dtype)
    if torch.is_grad_enabled() and (x.requires_grad or b.requires_grad):
        return F.leaky_relu(x + b, negative_slope) * scale
    # inference: one output buffer instead of three (same operations, same rounding)
    out = x + b
    F.leaky_relu_(out, negative_slope)
    return out.mul_(scale)


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample each channel.

    Same maths as rosinality's ``upfirdn2d`` (the kernel is flipped, i.e. a true
    convolution; padding may be negative = crop), symmetric in x and y.

    Args:
        x: [B, C, H, W].
        kernel: [kh, kw] FIR taps.
        up: integer upsampling factor (zeros inserted after each sample).
        down: integer downsampling factor (keeps every ``down``-th sample).
        pad: (before, after) padding in pixels, applied on both axes after upsampling.

    Returns:
        [B, C, (H*up + pad0 + pad1 - kh) // down + 1, same for W].
    """
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.view(b, c, h * up, w * up)
    p0, p1 = pad
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    if p0 == p1 >= 0:  # the convolution pads: no padded copy of a large map
        x = F.conv2d(x, weight, padding=p0, groups=c)
    else:
        x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
        if p0 < 0 or p1 < 0:
            hh, ww = x.shape[2], x.shape[3]
            x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
        x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def stride2_phase_kernels(weight: torch.Tensor, groups: int = 1) -> list[torch.Tensor]:
    """A 3x3 transposed-convolution weight [in, out/groups, 3, 3] -> the 4 plain conv kernels of its output parities.

    Output pixel (2i+r, 2j+s) only meets the taps of parity (r, s) of the flipped kernel:
    [out, in/groups, 2 or 1, 2 or 1], contiguous, in the order (0,0), (0,1), (1,0), (1,1).
    """
    cin, cout_g = weight.shape[0], weight.shape[1]
    flipped = (
        weight.view(groups, cin // groups, cout_g, 3, 3).transpose(1, 2).reshape(groups * cout_g, cin // groups, 3, 3)
    ).flip(2, 3)
    return [flipped[:, :, r::2, s::2].contiguous() for r, s in _PHASES]


def conv_transpose_stride2(
    x: torch.Tensor, weight: torch.Tensor, groups: int = 1, phases: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, stride=2, groups=groups)`` for a 3x3 kernel, as four plain convolutions.

    The same multiplications as the transposed convolution (see :func:`stride2_phase_kernels`),
    but oneDNN runs plain convolutions 1.2-1.5x faster than its transposed one on wide inputs.

    Args:
        x: [B, in, H, W].
        weight: [in, out/groups, 3, 3] (``conv_transpose2d``'s layout).
        phases: ``stride2_phase_kernels(weight, groups)`` when the caller keeps them.

    Returns:
        [B, out, 2H+1, 2W+1].
    """
    phases = stride2_phase_kernels(weight, groups) if phases is None else phases
    b, _, h, w = x.shape
    out = x.new_empty(b, phases[0].shape[0], 2 * h + 1, 2 * w + 1)
    for (r, s), taps in zip(_PHASES, phases, strict=True):
        out[:, :, r::2, s::2] = F.conv2d(x, taps, padding=(1 - r, 1 - s), groups=groups)
    return out


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable FIR kernel ``outer(k, k) / sum``, float32 [len, len]."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class PixelNorm(nn.Module):
    """``x / sqrt(mean(x**2, dim=1) + 1e-8)`` (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate.

    The stored ``weight`` [out, in] is **unscaled** (as in the checkpoints); the
    runtime weight is ``weight * lr_mul / sqrt(in)`` and the bias ``bias * lr_mul``.
    With ``activation="fused_lrelu"`` the bias goes through :func:`fused_leaky_relu`.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out]."""
        w = self.weight * self.scale
        if self.activation is not None:
            return fused_leaky_relu(F.linear(x, w), self.bias * self.lr_mul)
        return F.linear(x, w, None if self.bias is None else self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + leaky ReLU(0.2) * sqrt(2); parameter ``bias`` [C]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class Upsample(nn.Module):
    """2x FIR upsampling of an RGB skip image; buffer ``kernel`` = make_kernel(k) * 4."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR blur after a transposed conv; buffer ``kernel`` [k, k]."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        kernel = make_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor**2
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


def _unbatch(out: torch.Tensor, batch: int) -> torch.Tensor:
    """[1, B*C, H, W] of a grouped convolution over the batch -> [B, C, H, W].

    B = 1 is left as it is: a view would give the size-1 batch a new stride, and PyTorch would
    then no longer see a channels-last tensor as channels-last.
    """
    return out if batch == 1 else out.view(batch, -1, out.shape[2], out.shape[3])


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and optionally demodulated, 2x upsampling) convolution.

    Parameters: ``weight`` [1, out, in, k, k] (unscaled), ``modulation`` (EqualLinear
    style_dim -> in, bias init 1), and ``blur.kernel`` when upsampling.

    The official code builds one weight per sample (``scale * weight * style``,
    demodulated) and runs a grouped convolution. That rewrites more numbers than
    it saves on the small, wide layers (512 x 512 x 9 weights, 4..32 px maps), so
    there the style scales the input channels instead and the demodulation the
    output channels: the same sums, ``conv(x * s, W) * d = conv(x, W * s) * d``
    (rosinality's ``fused=False`` path), and a batch shares one convolution. The
    demodulation ``d[o] = rsqrt(sum_i s_i^2 * sum_k W[o,i,k]^2 + 1e-8)`` comes from a
    cached per-layer ``[out, in]`` table in both cases. Images agree to float rounding.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self._cache: dict[str, tuple[tuple, object]] = {}

    def _cached(self, name: str, make):  # noqa: ANN001, ANN202 - a derived value of the weight
        """``make(weight)`` computed once per weight tensor (recomputed when it changes), under no_grad.

        Inference tensors (weights loaded under ``torch.inference_mode``, as ComfyUI loads them) have no
        version counter, and cannot be changed in place outside inference mode: their key is their identity.
        """
        w = self.weight
        version = 0 if w.is_inference() else w._version
        key = (id(w), version, w.data_ptr(), w.device, w.dtype)
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = self._cache[name] = (key, make(w))
        return hit[1]

    def _weight_energy(self) -> torch.Tensor:
        """``sum_k W[o,i,k]^2`` as [out, in] float32 (cached per weight tensor)."""
        return self._cached("energy", lambda w: w[0].float().square().sum((2, 3)))

    def modulated(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution with the style applied, and the demodulation factors if still to apply.

        Whichever side is smaller takes the style: the input (``x * s``, then one
        convolution with the fixed weight for the whole batch) on the small, wide
        layers, or the weight (one ``W * s * d`` per sample, a grouped convolution)
        on the large maps and the 1x1 ToRGB, where the activations are far bigger.

        Args:
            x: [B, in, H, W]; w: [B, style_dim].

        Returns:
            ``(out, demod)``: out [B, out, H', W'] (H' = 2H when upsampling) and
            demod [B, out, 1, 1] to multiply, or None (no demodulation, or
            already folded into the weight); the layer output is ``out * demod``.
        """
        b, c, h, wd = x.shape
        style = self.modulation(w) * self.scale  # [B, in]
        demod = None
        if self.demodulate:
            energy = self._weight_energy() if not torch.is_grad_enabled() else self.weight[0].square().sum((2, 3))
            demod = torch.rsqrt(style.float().square() @ energy.t().float() + 1e-8)  # [B, out]
        weight = self.weight[0]
        if x.numel() <= 2 * b * weight.numel():
            x = x * style.view(b, c, 1, 1).to(x.dtype)
            weight = weight.to(x.dtype)
            demod = None if demod is None else demod.to(x.dtype).view(b, self.out_channel, 1, 1)
            if self.upsample:
                return self.blur(self._transposed(x, weight.transpose(0, 1), 1, fixed=True)), demod
            return F.conv2d(x, weight, padding=self.padding), demod
        factor = style[:, None, :]  # [B, 1, in]
        if demod is not None:
            factor = factor * demod.to(style.dtype)[:, :, None]  # [B, out, in]
        weight = (weight * factor[..., None, None]).to(x.dtype)  # [B, out, in, k, k]
        k = self.kernel_size
        if b > 1:  # one grouped convolution over the batch
            x = x.reshape(1, b * c, h, wd)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = self._transposed(x, weight, b)
            return self.blur(_unbatch(out, b)), None
        out = F.conv2d(x, weight.reshape(b * self.out_channel, c, k, k), padding=self.padding, groups=b)
        return _unbatch(out, b), None

    def _transposed(self, x: torch.Tensor, weight: torch.Tensor, groups: int, fixed: bool = False) -> torch.Tensor:
        """The 2x upsampling transposed convolution; weight [in, out/groups, k, k] -> [B, out, 2H+1, 2W+1].

        On 512-channel inputs (the 8-64 px layers) it runs as four plain convolutions (measured
        1.2-1.5x faster on a CPU with oneDNN; their kernels are kept when ``fixed``, i.e. the
        layer's own weight); on narrower ones oneDNN's transposed kernel is faster.
        """
        if self.kernel_size != 3 or self.in_channel < 512:
            return F.conv_transpose2d(x, weight, padding=0, stride=2, groups=groups)
        phases = None
        if fixed and not torch.is_grad_enabled():
            kept = self._cached("phases", lambda w: stride2_phase_kernels(w[0].transpose(0, 1)))
            phases = [p.to(x.dtype) for p in kept]  # no copy when x has the weight's dtype, as in the Generator
        return conv_transpose_stride2(x, weight, groups, phases)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, in, H, W], w [B, style_dim] -> [B, out, H', W'] (H' = 2H when upsampling)."""
        out, demod = self.modulated(x, w)
        return out if demod is None else out * demod

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, kernel_size={self.kernel_size}, "
            f"upsample={self.upsample}, demodulate={self.demodulate}"
        )


class NoiseInjection(nn.Module):
    """``x + weight * noise``; parameter ``weight`` [1]. ``noise`` is [1 or B, 1, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        n = (self.weight * noise).to(x.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or n.requires_grad):
            return x + n
        return x.add_(n)  # inference: x is the fresh output of the modulated conv


class ConstantInput(nn.Module):
    """Learned constant ``input`` [1, C, 4, 4], repeated over the batch."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU (``conv``, ``noise``, ``activate``)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out, demod = self.conv.modulated(x, w)
        n = (self.noise.weight * noise).to(out.dtype)
        if torch.is_grad_enabled() and (out.requires_grad or n.requires_grad):
            return self.activate((out if demod is None else out * demod) + n)
        # out * demod + noise in one pass; out is a fresh tensor either way
        out = out.add_(n) if demod is None else torch.addcmul(n, out, demod)
        F.leaky_relu_(out.add_(self.activate.bias.view(1, -1, 1, 1).to(out.dtype)), 0.2)
        return out.mul_(_SQRT2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + ``bias`` [1,3,1,1] + upsampled skip."""

    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W], w [B, style_dim], skip [B, 3, H/2, W/2] or None -> [B, 3, H, W]."""
        out = self.conv(x, w) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out
