"""Pure-PyTorch StyleGAN2 ops and a tiny Generator: FIR maths, batching, dtype handling."""

from __future__ import annotations

import pytest
import torch

from likeness.models.stylegan2 import Generator
from likeness.models.stylegan2_ops import conv_transpose_stride2, fused_leaky_relu, make_kernel, upfirdn2d


def test_upfirdn2d_is_a_true_convolution():
    kernel = torch.arange(1.0, 10.0).reshape(3, 3)  # asymmetric: catches a missing flip
    x = torch.zeros(1, 2, 5, 5)
    x[:, :, 2, 2] = 1.0
    out = upfirdn2d(x, kernel, pad=(1, 1))
    assert out.shape == (1, 2, 5, 5)
    torch.testing.assert_close(out[0, 1, 1:4, 1:4], kernel)


def test_upfirdn2d_upsampling_keeps_a_constant_image():
    kernel = make_kernel([1, 3, 3, 1]) * 4
    assert torch.equal(kernel * 16, torch.tensor([[1.0, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]]))
    out = upfirdn2d(torch.ones(1, 3, 6, 6), kernel, up=2, pad=(2, 1))
    assert out.shape == (1, 3, 12, 12)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.ones(1, 3, 8, 8))
    down = upfirdn2d(torch.ones(1, 1, 8, 8), make_kernel([1, 3, 3, 1]), down=2, pad=(1, 1))
    assert down.shape == (1, 1, 4, 4)


@pytest.mark.parametrize(("groups", "side"), [(1, 5), (3, 4)])
def test_transposed_convolution_as_four_plain_ones_equals_conv_transpose2d(groups, side):
    torch.manual_seed(1)
    x = torch.randn(2, 6 * groups, side, side + 1)
    weight = torch.randn(6 * groups, 4, 3, 3)  # [in, out/groups, 3, 3], asymmetric taps
    out = conv_transpose_stride2(x, weight, groups)
    ref = torch.nn.functional.conv_transpose2d(x, weight, stride=2, groups=groups)
    assert out.shape == ref.shape == (2, 4 * groups, 2 * side + 1, 2 * side + 3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fused_leaky_relu_inference_path_equals_autograd_path():
    x = torch.randn(2, 4, 3, 3)
    b = torch.randn(4)
    with torch.no_grad():
        fast = fused_leaky_relu(x, b)
    xg = x.clone().requires_grad_(True)
    slow = fused_leaky_relu(xg, b)
    assert torch.equal(fast, slow.detach())
    slow.sum().backward()
    assert torch.isfinite(xg.grad).all()
    expected = torch.where(x + b.view(1, 4, 1, 1) > 0, 1.0, 0.2) * 2**0.5
    torch.testing.assert_close(xg.grad, expected)


@pytest.fixture(scope="module")
def tiny_gen():
    torch.manual_seed(0)
    return Generator(8, style_dim=512, n_mlp=2).eval().requires_grad_(False)


def test_generator_names_and_shapes(tiny_gen):
    sd = tiny_gen.state_dict()
    assert tiny_gen.n_latent == 4 and tiny_gen.num_layers == 3
    assert sd["convs.0.conv.blur.kernel"].shape == (4, 4)
    assert sd["to_rgbs.0.upsample.kernel"].shape == (4, 4)
    assert sd["noises.noise_2"].shape == (1, 1, 8, 8)
    assert {"style.1.weight", "style.2.bias", "input.input", "conv1.activate.bias", "to_rgb1.bias"} <= set(sd)
    assert not any(k.startswith("upsamples") for k in sd)


def test_generator_batch_equals_single_and_is_deterministic(tiny_gen):
    w = torch.randn(2, 4, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batch = tiny_gen(w)
        single = tiny_gen(w[1:])
        again = tiny_gen(w)
        coarse = tiny_gen(w, max_resolution=4)
        plain_w = tiny_gen(w[:, 0])
        repeated = tiny_gen(w[:, :1].expand(-1, 4, -1))
    assert batch.shape == (2, 3, 8, 8) and coarse.shape == (2, 3, 4, 4)
    torch.testing.assert_close(batch[1:], single, rtol=0, atol=1e-5)
    assert torch.equal(batch, again)
    assert torch.equal(plain_w, repeated)
    assert (batch[0] - batch[1]).abs().max() > 1e-3


def test_generator_rejects_bad_inputs(tiny_gen):
    with pytest.raises(ValueError, match=r"\[B, 4, 512\], got \[1, 18, 512\]"):
        tiny_gen(torch.zeros(1, 18, 512))
    with pytest.raises(ValueError, match="max_resolution must be a power of two in 4..8, got 12"):
        tiny_gen(torch.zeros(1, 4, 512), max_resolution=12)
    with pytest.raises(ValueError, match="power of two between 8 and 1024, got 48"):
        Generator(48)


def test_generator_bf16_autocast_is_close(tiny_gen):
    w = tiny_gen.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(4)))
    with torch.no_grad():
        ref = tiny_gen(w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_gen(w)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max().item() <= 0.05 * max(1.0, ref.abs().max().item())


def _official_modconv(conv, x, w):
    """rosinality's fused path: one demodulated weight per sample and a grouped (transposed) convolution."""
    import torch.nn.functional as F

    b, c, h, wd = x.shape
    k = conv.kernel_size
    style = conv.modulation(w).view(b, 1, c, 1, 1)
    weight = conv.scale * conv.weight * style
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, conv.out_channel, 1, 1, 1)
    x = x.reshape(1, b * c, h, wd)
    if conv.upsample:
        weight = weight.transpose(1, 2).reshape(b * c, conv.out_channel, k, k)
        out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
        return conv.blur(out.view(b, conv.out_channel, out.shape[2], out.shape[3]))
    out = F.conv2d(x, weight.reshape(b * conv.out_channel, c, k, k), padding=conv.padding, groups=b)
    return out.view(b, conv.out_channel, out.shape[2], out.shape[3])


@pytest.mark.parametrize("side", [6, 40])  # 6: the style scales the input; 40: it scales the weight
@pytest.mark.parametrize(
    ("upsample", "demodulate", "k", "in_c"),
    [(False, True, 3, 12), (True, True, 3, 12), (True, True, 3, 512), (False, False, 1, 12)],
)  # 512 input channels: the upsampling runs as four plain convolutions
def test_modulated_conv_equals_the_per_sample_weight_formulation(upsample, demodulate, k, in_c, side):
    from likeness.models.stylegan2_ops import ModulatedConv2d

    torch.manual_seed(0)
    conv = ModulatedConv2d(in_c, 10, k, 16, demodulate=demodulate, upsample=upsample).eval()
    x, w = torch.randn(3, in_c, side, side), torch.randn(3, 16)
    with torch.no_grad():
        ref = _official_modconv(conv, x, w)
        out = conv(x, w)
        # the cached weight energy follows an in-place change of the weight
        conv.weight.mul_(2.0)
        again = conv(x, w)
        ref2 = _official_modconv(conv, x, w)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(again, ref2, atol=2e-5, rtol=1e-5)


def test_modulated_conv_with_weights_made_under_inference_mode():
    """ComfyUI loads and runs models under inference_mode: such weights have no version counter."""
    from likeness.models.stylegan2_ops import ModulatedConv2d

    torch.manual_seed(0)
    plain = ModulatedConv2d(8, 8, 3, 16)
    with torch.inference_mode():
        frozen = ModulatedConv2d(8, 8, 3, 16)
        frozen.load_state_dict(plain.state_dict())
    x, w = torch.randn(2, 8, 8, 8), torch.randn(2, 16)
    with torch.inference_mode():
        got = frozen(x, w)
        again = frozen(x, w)  # the cached weight energy is reused
    with torch.no_grad():
        want = plain(x, w)
    assert frozen.weight.is_inference()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
