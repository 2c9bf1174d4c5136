"""Inference form of the e4e encoder: the same function as :class:`.e4e.Encoder4Editing`, less work.

:func:`fuse_e4e` turns a loaded, eval-mode :class:`~.e4e.Encoder4Editing` into a
:class:`FusedE4E` once, at load. The reference module keeps the official
parameter names (so checkpoints load strictly and the goldens test it); the
fused one is what inversion runs. What changes, all exact in real arithmetic
(W+ moves by about 1e-6 in fp32):

* Every BatchNorm that follows a convolution is folded into that convolution's
  weight and bias (input layer, the second conv of each IR-SE unit, the
  projection shortcuts). The BatchNorm that *precedes* a unit's first conv is
  one fused multiply-add (it cannot be folded: the conv's zero padding would
  then see the BatchNorm shift).
* Squeeze-and-excitation runs as two small matrix products on the pooled
  vector (not four 1x1 convolutions on a 1x1 image), and its rescale and the
  residual sum are one ``addcmul`` (no temporary).
* The 18 style heads run as 15 convolutions instead of 98: the heads of a group
  that read the same feature map (3 on ``c3``, 4 on ``p2``, 11 on ``p1``) share
  one convolution with their weights concatenated, and each later level of a
  group is one grouped convolution (``groups`` = its heads), the leaky ReLU fused
  into each. Separate convolutions on 8x8 and smaller maps cost more than their
  arithmetic; on a GPU the change also saves kernel launches.
* On the CPU the convolution weights are packed once into oneDNN's layout
  (:meth:`FusedE4E.pack_for_cpu`, see :class:`_Conv`), activations are
  channels-last, and a batch runs in slices of :attr:`FusedE4E.max_batch`.

At 256 px and batch 1 the forward is then bound by its arithmetic (145 GFLOP):
on a 2-core AVX-512 CPU the convolutions run at about 210 GFLOP/s, the rate of a
single large oneDNN convolution. Call under ``torch.inference_mode()`` (or
``no_grad``); some ops work in place.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .e4e import _COARSE, _MIDDLE, BottleneckIRSE, Encoder4Editing, run_body
from .inversion.precision import cpu_low_precision_support

__all__ = ["FusedE4E", "fuse_e4e"]

logger = logging.getLogger(__name__)

_SLOPE = 0.01  # nn.LeakyReLU() default, used by the official GradualStyleBlock


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight [O,I,kh,kw] (+ bias [O]) followed by eval BatchNorm -> one conv's (weight, bias), in float64."""
    inv = (bn.running_var.double() + bn.eps).rsqrt() * bn.weight.double()
    b = torch.zeros_like(inv) if bias is None else bias.double()
    return weight.double() * inv.view(-1, 1, 1, 1), (b - bn.running_mean.double()) * inv + bn.bias.double()


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x * scale + shift`` (both [C], float64)."""
    scale = (bn.running_var.double() + bn.eps).rsqrt() * bn.weight.double()
    return scale, bn.bias.double() - bn.running_mean.double() * scale


class _Conv(nn.Module):
    """A fixed convolution whose weight can live in oneDNN's packed layout on the CPU.

    ``F.conv2d`` re-orders a plain weight into oneDNN's blocked layout on every call: at
    batch 1 the e4e encoder (1 GB of weights) spends about as long on that as on its
    arithmetic. :meth:`pack` does it once (``torch.ops.mkldnn``, what ``torch.compile``'s
    CPU freezing uses); :meth:`unpack` restores the plain tensor exactly, and any
    ``.to()`` unpacks first, so the module moves between devices and dtypes as usual.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, groups: int = 1
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.groups = stride, padding, groups
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("bias", bias)

    @property
    def packed(self) -> bool:
        return self.weight.is_mkldnn

    def pack(self) -> None:
        if not self.packed:
            args = ([self.padding] * 2, [self.stride] * 2, [1, 1], self.groups)
            self.weight = torch.ops.mkldnn._reorder_convolution_weight(self.weight.contiguous(), *args)

    def unpack(self) -> None:
        if self.packed:
            self.weight = self.weight.to_dense()

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        self.unpack()
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict) -> _Conv:
        """A copy with a plain weight, packed again when this one is (oneDNN tensors cannot be deep-copied)."""
        weight = self.weight.to_dense() if self.packed else self.weight
        bias = None if self.bias is None else self.bias.clone()
        twin = _Conv(weight.clone(), bias, self.stride, self.padding, self.groups)
        if self.packed:
            twin.pack()
        return twin

    def forward(self, x: torch.Tensor, slope: float | None = None) -> torch.Tensor:
        """Convolution (+ bias), then ``leaky_relu(slope)`` when given (fused into the packed kernel)."""
        if self.packed:
            attr, scalars = ("leaky_relu", [slope]) if slope is not None else ("none", [])
            pad, stride = [self.padding] * 2, [self.stride] * 2
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, pad, stride, [1, 1], self.groups, attr, scalars, ""
            )
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return y if slope is None else F.leaky_relu_(y, slope)


class _FusedUnit(nn.Module):
    """One IR-SE unit with its BatchNorms folded (see the module docstring)."""

    def __init__(self, unit: BottleneckIRSE, dtype: torch.dtype) -> None:
        super().__init__()
        bn1, conv1, prelu, conv2, bn2, se = unit.res_layer
        self.stride = unit.stride
        scale, shift = _bn_affine(bn1)
        w2, b2 = _fold_bn(conv2.weight, None, bn2)
        self.register_buffer("bn1_scale", scale.view(1, -1, 1, 1).to(dtype))
        self.register_buffer("bn1_shift", shift.view(1, -1, 1, 1).to(dtype))
        self.conv1 = _Conv(conv1.weight.detach().to(dtype).clone(), None, 1, 1)
        self.register_buffer("prelu", prelu.weight.detach().to(dtype).clone())
        self.conv2 = _Conv(w2.to(dtype), b2.to(dtype), self.stride, 1)
        self.register_buffer("se1", se.fc1.weight.detach().flatten(1).to(dtype).clone())  # [C/16, C]
        self.register_buffer("se2", se.fc2.weight.detach().flatten(1).to(dtype).clone())  # [C, C/16]
        self.project = not isinstance(unit.shortcut_layer, nn.MaxPool2d)
        if self.project:
            ws, bs = _fold_bn(unit.shortcut_layer[0].weight, None, unit.shortcut_layer[1])
            self.shortcut = _Conv(ws.to(dtype), bs.to(dtype), self.stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project:
            shortcut = self.shortcut(x)
        else:
            shortcut = x[:, :, :: self.stride, :: self.stride]
        r = torch.addcmul(self.bn1_shift, x, self.bn1_scale)
        r = self.conv2(F.prelu(self.conv1(r), self.prelu))
        s = torch.sigmoid(F.linear(F.relu(F.linear(r.mean((2, 3)), self.se1)), self.se2))
        return torch.addcmul(shortcut, r, s[:, :, None, None])


class _HeadGroup(nn.Module):
    """The style heads that read one feature map, run together (see the module docstring).

    ``levels[0]`` is the heads' first convolutions concatenated ([n*512, C, 3, 3]); every later
    level is one grouped convolution ([n*512, 512, 3, 3], ``groups=n``), all 3x3 stride 2 with the
    leaky ReLU fused. The last level maps a map of at most 2x2 to 1x1, so its top and left taps
    only ever meet zero padding: it keeps the other 2x2 taps (5/9 less weight to hold and read)
    and pads the input at the bottom and right instead. ``lin_w`` [n, 512, 512] (scaled,
    transposed) / ``lin_b`` [n, 1, 512] are the heads' final equalised linear layers.
    """

    def __init__(self, blocks: list[nn.Module], dtype: torch.dtype) -> None:
        super().__init__()
        self.n = len(blocks)
        convs = [[m for m in b.convs if isinstance(m, nn.Conv2d)] for b in blocks]
        self.out_c = blocks[0].out_c
        self.levels = nn.ModuleList()
        last = len(convs[0]) - 1
        for level in range(last + 1):
            w = torch.cat([c[level].weight.detach() for c in convs]).to(dtype)
            b = torch.cat([c[level].bias.detach() for c in convs]).to(dtype)
            if level == last:
                w = w[:, :, 1:, 1:].contiguous()
            self.levels.append(_Conv(w, b, 2, 0 if level == last else 1, groups=1 if level == 0 else self.n))
        lin_w = torch.stack([(b.linear.weight.detach().double() * b.linear.scale).t() for b in blocks])
        lin_b = torch.stack([b.linear.bias.detach().double() * b.linear.lr_mul for b in blocks]).unsqueeze(1)
        self.register_buffer("lin_w", lin_w.to(dtype).contiguous())
        self.register_buffer("lin_b", lin_b.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, S, S] (shared by the heads) -> [n, B, 512]."""
        for conv in self.levels[:-1]:
            x = conv(x, _SLOPE)  # [B, n*512, S/2, S/2], ...
        if x.shape[-1] > 2 or x.shape[-2] > 2:
            raise ValueError(
                f"e4e's style heads end on a map of at most 2x2, got {list(x.shape[-2:])}: use 256 px images"
            )
        x = self.levels[-1](F.pad(x, (0, 1, 0, 1)), _SLOPE)  # [B, n*512, 1, 1]
        y = x.reshape(x.shape[0], self.n, self.out_c).transpose(0, 1)
        return torch.baddbmm(self.lin_b, y, self.lin_w)


class FusedE4E(nn.Module):
    """e4e encoder for inference; same input and output as :class:`~.e4e.Encoder4Editing` (18 W+ rows).

    Build it with :func:`fuse_e4e`. All tensors are buffers, so ``.to(device,
    dtype)`` moves and casts it like any module; it has no trainable parameters.
    """

    @torch.no_grad()
    def __init__(self, encoder: Encoder4Editing, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if encoder.training:
            raise ValueError("fuse_e4e needs an eval() encoder: BatchNorm folding uses the running statistics")
        self.style_count = encoder.style_count
        self.max_batch = 2  # CPU slice size (see forward); GPUs run the whole batch
        conv, bn, prelu = encoder.input_layer
        w_in, b_in = _fold_bn(conv.weight, None, bn)
        self.input_conv = _Conv(w_in.to(dtype), b_in.to(dtype), 1, 1)
        self.register_buffer("prelu_in", prelu.weight.detach().to(dtype).clone())
        self.body = nn.ModuleList(_FusedUnit(u, dtype) for u in encoder.body)
        lat1, lat2 = encoder.latlayer1, encoder.latlayer2
        self.latlayer1 = _Conv(lat1.weight.detach().to(dtype).clone(), lat1.bias.detach().to(dtype).clone(), 1, 0)
        self.latlayer2 = _Conv(lat2.weight.detach().to(dtype).clone(), lat2.bias.detach().to(dtype).clone(), 1, 0)
        styles = list(encoder.styles)
        self.coarse = _HeadGroup(styles[:_COARSE], dtype)
        self.middle = _HeadGroup(styles[_COARSE:_MIDDLE], dtype)
        self.fine = _HeadGroup(styles[_MIDDLE:], dtype)

    def convs(self) -> list[_Conv]:
        return [m for m in self.modules() if isinstance(m, _Conv)]

    def pack_for_cpu(self) -> bool:
        """Put every convolution weight in oneDNN's packed layout (CPU only; see :class:`_Conv`).

        Returns True when packed. False (weights left plain, ``F.conv2d`` used) when the
        module is not on the CPU, this PyTorch has no oneDNN packing ops, or oneDNN has
        no native kernels for the dtype; the reason is logged at debug level.
        """
        ref = self.latlayer1.weight
        if ref.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return False
        if ref.dtype not in (torch.float32, torch.bfloat16) or (
            ref.dtype == torch.bfloat16 and not cpu_low_precision_support()["bf16"]
        ):
            logger.debug("e4e: convolution weights left unpacked for %s on this CPU", ref.dtype)
            return False
        try:
            for conv in self.convs():
                conv.pack()
        except (AttributeError, RuntimeError) as exc:  # an older PyTorch without these private ops
            self.unpack()
            logger.debug("e4e: oneDNN weight packing unavailable (%s); using F.conv2d", exc)
            return False
        return True

    def unpack(self) -> None:
        """Plain weights again (exactly the values before :meth:`pack_for_cpu`)."""
        for conv in self.convs():
            conv.unpack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, 256, 256] in [-1, 1] -> W+ offsets [B, 18, 512] (no latent_avg), in the module's dtype.

        A batch larger than :attr:`max_batch` runs in slices of that size: the same
        result, a bounded peak of memory (the stacked heads' temporaries grow with
        the batch), and on a CPU feature maps that stay in cache longer.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"e4e expects images [B, 3, 256, 256] in [-1, 1], got {list(x.shape)}")
        if x.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        step = self.max_batch if x.device.type == "cpu" else x.shape[0]
        if x.shape[0] > step:
            return torch.cat([self._forward(x[i : i + step]) for i in range(0, x.shape[0], step)])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = run_body(self.body, F.prelu(self.input_conv(x), self.prelu_in))
        p2 = self.latlayer1(c2)
        p2 += F.interpolate(c3, size=p2.shape[-2:], mode="bilinear", align_corners=True)
        p1 = self.latlayer2(c1)
        p1 += F.interpolate(p2, size=p1.shape[-2:], mode="bilinear", align_corners=True)
        rows = torch.cat([self.coarse(c3), self.middle(p2), self.fine(p1)])  # [18, B, 512]
        rows[1:] += rows[0]
        return rows.transpose(0, 1)


def fuse_e4e(encoder: Encoder4Editing) -> FusedE4E:
    """Fold and stack an eval-mode :class:`~.e4e.Encoder4Editing` into a :class:`FusedE4E` (same device, dtype).

    Folding is computed in float64 and rounded once to the encoder's dtype.
    """
    ref = next(encoder.parameters())
    return FusedE4E(encoder, dtype=ref.dtype).to(ref.device)
