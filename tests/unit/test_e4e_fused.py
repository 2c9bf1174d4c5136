"""The inference form of e4e (models/e4e_fused.py) computes what the reference modules compute.

Small widths here; the full encoder is checked against the golden W+ in
tests/reference/test_e4e_golden.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from likeness.models.e4e import BottleneckIRSE, GradualStyleBlock
from likeness.models.e4e_fused import _fold_bn, _FusedUnit, _HeadGroup


def _random_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))


def test_conv_batchnorm_fold_is_exact():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 8, 3, 2, 1, bias=False)
    bn = torch.nn.BatchNorm2d(8).eval()
    _random_bn(bn, 1)
    w, b = _fold_bn(conv.weight, None, bn)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        ref = bn(conv(x))
        out = torch.nn.functional.conv2d(x, w.float(), b.float(), 2, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("in_c", "depth", "stride"), [(16, 32, 2), (32, 32, 1), (32, 32, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_unit_equals_the_ir_se_unit(in_c, depth, stride, channels_last):
    torch.manual_seed(2)
    unit = BottleneckIRSE(in_c, depth, stride).eval()
    _random_bn(unit, 3)
    fused = _FusedUnit(unit, torch.float32)
    x = torch.randn(2, in_c, 12, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        fused.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), unit(x), atol=2e-5, rtol=0)


@pytest.mark.parametrize("spatial", [16, 8])
def test_head_group_equals_the_separate_style_blocks(spatial):
    torch.manual_seed(4)
    blocks = [GradualStyleBlock(8, 16, spatial).eval() for _ in range(3)]
    group = _HeadGroup(blocks, torch.float32)
    assert len(group.levels) == spatial.bit_length() - 1
    x = torch.randn(2, 8, spatial, spatial)
    with torch.inference_mode():
        out = group(x)
        ref = torch.stack([b(x) for b in blocks])
    assert out.shape == (3, 2, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")
def test_packed_convolution_equals_f_conv2d_and_unpacks_exactly_on_to():
    from likeness.models.e4e_fused import _Conv

    torch.manual_seed(5)
    weight, bias = torch.randn(16, 8, 3, 3), torch.randn(16)
    conv = _Conv(weight.clone(), bias.clone(), 2, 1)
    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = conv(x, 0.01)
        conv.pack()
        assert conv.packed
        packed = conv(x, 0.01)  # leaky ReLU fused into the oneDNN kernel
    ref = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(x, weight, bias, 2, 1), 0.01)
    torch.testing.assert_close(plain, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, ref, atol=1e-4, rtol=1e-5)
    twin = copy.deepcopy(conv)
    assert twin.packed and torch.equal(twin(x, 0.01), packed)
    conv.to(torch.float64)  # any .to() unpacks first, then applies
    assert not conv.packed and conv.weight.dtype == torch.float64
    assert torch.equal(conv.weight.float(), weight)


def test_head_group_last_level_keeps_only_the_taps_that_meet_the_map():
    """The last level holds 2x2 of the 3x3 taps; maps smaller than planned still match, larger ones are refused."""
    torch.manual_seed(6)
    blocks = [GradualStyleBlock(8, 16, 8).eval() for _ in range(2)]
    group = _HeadGroup(blocks, torch.float32)
    assert group.levels[-1].weight.shape == (2 * 16, 16, 2, 2) and group.levels[0].weight.shape[-1] == 3
    small = torch.randn(1, 8, 4, 4)  # reaches 1x1 a level early, as e4e on a 64 px image
    with torch.inference_mode():
        torch.testing.assert_close(group(small), torch.stack([b(small) for b in blocks]), atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="at most 2x2, got \\[4, 4\\]: use 256 px images"):
            group(torch.randn(1, 8, 16, 16))
