"""W+ adapter overhead on an SD1.5-size diffusers UNet: per-step time ratio and weight memory.

Random-init UNet2DConditionModel with the SD1.5 config (block_out_channels
(320, 640, 1280, 1280), cross_attention_dim 768, 8 heads, layers_per_block 2),
64x64 latents, batch 2 (CFG), fp32. Unpatched, patched (λ = 1) and patched
(λ = 0) steps are interleaved in the same run; the table gives medians after
warm-up and the ratio to the unpatched step, plus matmul FLOPs per step
(torch.utils.flop_counter) and the bytes of the adapter weights.

Run from the repository root:
    python -m bench.bench_wplus_adapter [--steps 4] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python bench/bench_wplus_adapter.py`: make `models` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

SD15_CONFIG = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    layers_per_block=2,
)


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> tuple[float, ...]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def main(argv: list[str] | None = None) -> int:
    from diffusers import UNet2DConditionModel

    from models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet, encode_context, set_wplus_scale
    from models.wplus_adapter.model import build_wplus_adapter_checkpoint, load_wplus_adapter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting passes")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_CONFIG).eval().to(device)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wplus_adapter_random.bin"
        torch.save(build_wplus_adapter_checkpoint(seed=0), path)
        adapter = load_wplus_adapter(path).to(device)

    g = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 64, 64, generator=g).to(device)
    text = torch.randn(2, 77, 768, generator=g).to(device)
    wplus = torch.randn(1, 18, 512, generator=g).to(device)
    context = torch.cat([encode_context(text[:1], None, adapter), encode_context(text[1:], wplus, adapter)])
    timestep = torch.tensor([500.0], device=device)

    stock = dict(unet.attn_processors)
    apply_wplus_adapter_to_unet(unet, adapter, scale=1.0)
    patched = dict(unet.attn_processors)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(variant: str) -> tuple[float, float]:
        if variant == "unpatched":
            unet.set_attn_processor(dict(stock))
            ctx = text
        else:
            unet.set_attn_processor(dict(patched))
            set_wplus_scale(unet, 0.0 if variant == "patched λ=0" else 1.0)
            ctx = context
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            unet(sample, timestep, encoder_hidden_states=ctx)
        sync()
        return time.perf_counter() - start, time.process_time() - cpu_start

    variants = ["unpatched", "patched λ=1", "patched λ=0"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:
        step(v)  # warm-up
    for _ in range(args.steps):
        for v in variants:
            wall, proc = step(v)
            times[v].append(wall)
            cpu[v].append(proc)

    flops: dict[str, float] = {v: float("nan") for v in variants}
    for v, ctx, procs, lam in (
        ()
        if args.no_flops
        else (
            ("unpatched", text, stock, 0.0),
            ("patched λ=1", context, patched, 1.0),
            ("patched λ=0", context, patched, 0.0),
        )
    ):
        unet.set_attn_processor(dict(procs))
        set_wplus_scale(unet, lam)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            unet(sample, timestep, encoder_hidden_states=ctx)
        flops[v] = counter.get_total_flops()

    site_bytes = sum(
        p.numel() * p.element_size() for n, p in adapter.named_parameters() if n.startswith("wplus_adapter.")
    )
    total_bytes = sum(p.numel() * p.element_size() for p in adapter.parameters())
    shared = {q.data_ptr() for q in adapter.parameters()}
    unet_bytes = sum(p.numel() * p.element_size() for p in unet.parameters() if p.data_ptr() not in shared)

    import diffusers

    _out("W+ adapter benchmark: SD1.5-size UNet2DConditionModel (random init), 64x64 latents, batch 2, fp32")
    _out(f"machine: {platform.platform()} | CPU {_cpu_name()} | device {device} | threads {torch.get_num_threads()}")
    _out(f"torch {torch.__version__} | diffusers {diffusers.__version__} | python {platform.python_version()}")
    _out(f"UNet build {build_s:.1f} s; {args.steps} timed steps per variant after 1 warm-up, interleaved")
    _out()
    _out(f"load average (1/5/15 min) at the end: {' '.join(f'{x:.2f}' for x in _loadavg())}")
    _out()
    _out(
        f"| {'variant':<12} | {'median s/step':>13} | {'min':>7} | {'max':>7} | {'ratio':>6} "
        f"| {'CPU s/step':>10} | {'CPU ratio':>9} | {'GFLOP/step':>10} |"
    )
    _out(f"|{'-' * 14}|{'-' * 15}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 12}|{'-' * 11}|{'-' * 12}|")
    base = statistics.median(times["unpatched"])
    cpu_base = statistics.median(cpu["unpatched"])
    for v in variants:
        med, cmed = statistics.median(times[v]), statistics.median(cpu[v])
        _out(
            f"| {v:<12} | {med:>13.3f} | {min(times[v]):>7.3f} | {max(times[v]):>7.3f} | {med / base:>6.3f} "
            f"| {cmed:>10.3f} | {cmed / cpu_base:>9.3f} | {flops[v] / 1e9:>10.1f} |"
        )
    _out()
    _out(f"matmul FLOP ratio patched/unpatched: {flops['patched λ=1'] / flops['unpatched']:.4f}")
    _out(
        f"adapter weights ({adapter.dtype}): per-site layers {site_bytes / 2**20:.1f} MiB, "
        f"with w_proj {total_bytes / 2**20:.1f} MiB ({total_bytes:,} bytes); UNet {unet_bytes / 2**20:.0f} MiB "
        f"(+{100 * total_bytes / unet_bytes:.1f} %); fp16 halves these"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
