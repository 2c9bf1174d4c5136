"""Benchmark cases for the e4e encoder and the StyleGAN2 generator (ours vs the official code)."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import torch

from .harness import Row, check_parity, import_official, likeness, max_abs, ratio_row, time_rounds

# e4e: the output of a correct port differs from the official one by float rounding only (W+ values are O(1))
E4E_TOL = 1e-4
# StyleGAN2 images: the golden tolerance (tests/reference/test_stylegan2_golden.py)
SG2_TOL = 1e-4


def _randomise_batchnorms(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics (default init folds to the identity, which would test nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(1.0 + torch.rand(n, generator=g) * 0.2)
                m.weight.copy_(0.9 + torch.rand(n, generator=g) * 0.2)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


def official_e4e(root: Path) -> torch.nn.Module:
    """encoder4editing's ``Encoder4Editing(50, 'ir_se')`` for a 1024 generator (18 W+ rows)."""
    module = import_official(root, "models.encoders.psp_encoders", clash=("models",))
    return module.Encoder4Editing(50, "ir_se", types.SimpleNamespace(stylegan_size=1024))


def e4e_models(official_root: Path | None, device: torch.device, seed: int = 0):
    """(ours, official module or None) with identical weights.

    Ours is what ``load_e4e`` and ``E4EInverter.to`` build: the reference module
    loaded strictly, fused, channels-last, convolution weights packed on the CPU.
    """
    likeness()
    from likeness.models.e4e import Encoder4Editing
    from likeness.models.e4e_fused import fuse_e4e

    torch.manual_seed(seed)
    reference = Encoder4Editing().eval().requires_grad_(False)
    _randomise_batchnorms(reference, seed)
    official = None
    if official_root is not None:
        official = official_e4e(official_root).eval().requires_grad_(False)
        official.load_state_dict(reference.state_dict(), strict=True)
        official.to(device)
    fused = fuse_e4e(reference).to(device)
    if device.type in ("cpu", "cuda"):
        fused.to(memory_format=torch.channels_last)
    fused.pack_for_cpu()  # what E4EInverter.to does: oneDNN weight layout on the CPU, a no-op elsewhere
    return fused, official


def e4e_cases(
    official_root: Path | None,
    device: torch.device,
    batches: tuple[int, ...],
    rounds: int,
    low_precisions: list[torch.dtype],
    size: int = 256,
) -> list[Row]:
    """e4e encoder time per call at each batch (fp32), then one row per low precision (vs the official fp32).

    The low-precision rows cast our encoder in place, so they come last.
    """
    ours, official = e4e_models(official_root, device)
    g = torch.Generator().manual_seed(1)
    rows = []
    for batch in batches:
        x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
        xo = x.contiguous(memory_format=torch.channels_last) if device.type in ("cpu", "cuda") else x
        arms = {"ours": lambda xo=xo: ours(xo)}
        parity = None
        with torch.inference_mode():
            if official is not None:
                parity = check_parity(f"e4e batch {batch}", ours(xo), official(x), E4E_TOL)
                arms["official"] = lambda x=x: official(x)
            t = time_rounds(arms, rounds, device)
        rows.append(ratio_row(f"e4e encoder, batch {batch}, fp32", t["ours"], t.get("official"), parity=parity))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)
    xo = x.contiguous(memory_format=torch.channels_last) if device.type in ("cpu", "cuda") else x
    with torch.inference_mode():
        ref32 = ours(xo).float()
    for dtype in low_precisions:
        rows.append(_e4e_low_precision(ours, official, (x, xo, ref32), device, dtype, rounds))
    return rows


def _e4e_low_precision(ours, official, inputs, device, dtype, rounds) -> Row:
    """Ours with weights and activations in ``dtype`` (what Load e4e's precision does) vs the official fp32."""
    x, xo, ref32 = inputs
    with torch.inference_mode():
        low = ours.to(dtype)  # in place: the fp32 weights are rounded from here on, so these rows come last
        low.pack_for_cpu()
        err = max_abs(low(xo.to(dtype)), ref32)
        arms = {"ours": lambda: low(xo.to(dtype))}
        if official is not None:
            arms["official"] = lambda: official(x)
        t = time_rounds(arms, rounds, device)
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return ratio_row(
        f"e4e encoder, batch 1, {name} (vs official fp32)",
        t["ours"],
        t.get("official"),
        parity=err,
        note=f"W+ max abs diff vs our fp32: {err:.3g}",
    )


def official_generator(root: Path):
    """rosinality's ``model.Generator`` with its CUDA ops replaced by its own pure-PyTorch paths."""
    model = import_official(root, "model", clash=("model", "op"))
    upfirdn, fused_act = sys.modules["op.upfirdn2d"], sys.modules["op.fused_act"]

    def native_upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
        pad = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
        return upfirdn.upfirdn2d_native(x, kernel, up, up, down, down, *pad)

    def native_lrelu(x, bias=None, negative_slope=0.2, scale=2**0.5):
        if bias is not None:
            x = x + bias.view(1, bias.shape[0], *([1] * (x.ndim - 2)))
        return torch.nn.functional.leaky_relu(x, negative_slope) * scale

    # on the CPU these are exactly the official code's own branches; on CUDA they replace the nvcc-built ops
    model.upfirdn2d = native_upfirdn2d
    model.fused_leaky_relu = native_lrelu
    fused_act.fused_leaky_relu = native_lrelu
    return model.Generator


def sg2_cases(
    official_root: Path | None,
    device: torch.device,
    rounds: int,
    sizes: tuple[int, ...],
    lows: list[torch.dtype] = (),
    fp32: bool = True,
) -> list[Row]:
    """StyleGAN2 synthesis from W+ at each size; below 1024 ours is the preview path (the 1024 model stopped early).

    Each low precision adds a row per size: ours in that dtype vs the official fp32, with the image's
    max abs difference to our fp32 image as its parity figure.
    """
    official_cls = official_generator(official_root) if official_root is not None else None
    rows = []
    for size in sizes:
        rows += _sg2_case(official_cls, size, device, rounds, lows, fp32)
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    return rows


def _sg2_case(official_cls, size: int, device: torch.device, rounds: int, lows, fp32: bool) -> list[Row]:
    likeness()
    from likeness.models.stylegan2 import Generator

    torch.manual_seed(3)
    ours = Generator(1024).eval().requires_grad_(False)
    official = None
    if official_cls is not None:
        official = official_cls(size, 512, 8, channel_multiplier=2).eval().requires_grad_(False)
        state = {k: v for k, v in ours.state_dict().items() if k in official.state_dict()}
        official.load_state_dict(state, strict=True)
        official.to(device)
    ours.to(device)
    w = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(4)).to(device)
    stop = None if size == 1024 else size
    n_latent = 2 * size.bit_length() - 4
    label = f"ours: the 1024 model stopped at {size}, our preview path" if size < 1024 else "1024 px"
    rows = []
    with torch.inference_mode():
        ref32 = ours(w, max_resolution=stop)
        base = None
        if official is not None:
            base = lambda: official([w[:, :n_latent]], input_is_latent=True, randomize_noise=False)[0]  # noqa: E731
        if fp32:
            arms = {"ours": lambda: ours(w, max_resolution=stop)}
            parity = None
            if base is not None:
                parity = check_parity(f"StyleGAN2 {size}", ref32, base(), SG2_TOL)
                arms["official"] = base
            t = time_rounds(arms, rounds, device)
            name = f"StyleGAN2 synthesis {size}², batch 1, fp32 ({label})"
            rows.append(ratio_row(name, t["ours"], t.get("official"), parity=parity))
        for dtype in lows:
            low = ours.to(dtype)  # in place; the fp32 reference image was taken above
            err = max_abs(low(w, max_resolution=stop), ref32)
            arms = {"ours": lambda low=low: low(w, max_resolution=stop)}
            if base is not None:
                arms["official"] = base
            t = time_rounds(arms, rounds, device)
            tag = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
            name = f"StyleGAN2 synthesis {size}², batch 1, {tag} vs official fp32 ({label})"
            rows.append(ratio_row(name, t["ours"], t.get("official"), parity=err, note="parity: vs our fp32 image"))
    return rows
