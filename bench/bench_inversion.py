"""e4e inversion throughput and StyleGAN2-1024 preview time on the CPU (or another device).

Random-init weights (speed only; the maths does not depend on the values):
``Encoder4Editing`` (IR-SE-50 + FPN + 18 style blocks, 267M elements) wrapped
in ``E4EInverter`` (encode = encoder + latent_avg), and ``Generator(1024)``.
Inputs are [B,3,256,256] in [-1,1]. fp32 and bf16-autocast encodes at batch 1
and 8 are interleaved per repeat; the table gives the median and best time per
call, images/s and the ratio to fp32 batch 1. The preview rows time a full
1024 px render and the ``fast`` 256 px preview (generator stopped at 256).

The machine is shared: the 1-minute load average is printed before and after;
a load above the thread count inflates every number.

Run from the repository root:
    python -m bench.bench_inversion [--repeats 3] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/bench_inversion.py`: make `models` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.e4e import Encoder4Editing  # noqa: E402
from models.inversion.e4e_model import E4EInverter  # noqa: E402
from models.stylegan2 import Generator  # noqa: E402


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.2f}"
    return "n/a"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-preview", action="store_true", help="skip the generator rows")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    _out(
        f"# e4e inversion bench — CPU: {_cpu_name()}; torch {torch.__version__}; threads {torch.get_num_threads()} "
        f"(os.cpu_count {os.cpu_count()}); device {device}; python {platform.python_version()}"
    )
    _out(f"# load average (1 min) at start: {_load()}")

    encoder = Encoder4Editing().eval().requires_grad_(False)
    inv = E4EInverter(encoder, torch.zeros(18, 512), source="random-init").to(device)
    gen = torch.Generator().manual_seed(1)
    images = {b: (torch.rand(b, 3, 256, 256, generator=gen) * 2 - 1).to(device) for b in (1, 8)}
    amp_dtype = torch.bfloat16

    def encode(batch: int, amp: bool):
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return inv.encode(images[batch])

    configs = [(1, False), (1, True), (8, False), (8, True)]
    times: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
    for c in configs:  # warm-up (oneDNN primitive creation, allocator)
        encode(*c)
    for _ in range(args.repeats):
        for c in configs:
            times[c].append(_time(lambda c=c: encode(*c), device))
    ref = encode(1, False)
    low = encode(1, True)
    bf16_err = (low - ref).abs().max().item()

    base = statistics.median(times[(1, False)])
    _out()
    _out("| what | batch | precision | median s/call | best s/call | images/s | ratio vs fp32 b1 (per image) |")
    _out("|---|---|---|---|---|---|---|")
    for batch, amp in configs:
        med = statistics.median(times[(batch, amp)])
        prec = "bf16 autocast" if amp else "fp32"
        _out(
            f"| e4e encode 256² | {batch} | {prec} | {med:.3f} | {min(times[(batch, amp)]):.3f} | "
            f"{batch / med:.2f} | {(med / batch) / base:.2f} |"
        )
    _out(f"\nbf16 autocast vs fp32 W+ (random-init weights): max abs diff {bf16_err:.3g}")
    _out(
        f"requirement: one 256x256 inversion < 2 s on {args.threads} threads — fp32 b1 median {base:.3f} s: "
        f"{'PASS' if base < 2.0 else 'FAIL'}"
    )

    if not args.no_preview:
        g = Generator(1024).eval().requires_grad_(False).to(device)
        w = torch.randn(1, 18, 512, generator=gen).to(device)
        rows = []
        for label, res in (("StyleGAN2-1024 full 1024²", None), ("StyleGAN2-1024 fast preview 256²", 256)):
            with torch.inference_mode():
                g(w, max_resolution=res)  # warm-up
                ts = [_time(lambda res=res: g(w, max_resolution=res), device) for _ in range(max(1, args.repeats - 1))]
            rows.append((label, statistics.median(ts), min(ts)))
        _out()
        _out("| preview | batch | precision | median s | best s |")
        _out("|---|---|---|---|---|")
        for label, med, best in rows:
            _out(f"| {label} | 1 | fp32 | {med:.3f} | {best:.3f} |")
    _out(f"\n# load average (1 min) at end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
