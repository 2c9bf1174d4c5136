"""Likeness vs the official implementations, side by side: e4e, StyleGAN2, the W+ adapter's attention.

Each case runs our code and the official code in one process, with identical
weights, checks that both give the same output, then times interleaved rounds
(bench/harness.py). Ratios are ours / official (< 1 = we are faster); without
``--official`` only our absolute times are printed.

    python -m bench.side_by_side --official /path/to/official        # the README table (CPU, fp32)
    python -m bench.side_by_side --device cuda --precision all \\
        --json output/bench/gpu.json --markdown output/bench/gpu.md   # `make bench-gpu`
    python -m bench.side_by_side --quick                               # reduced mode (CI, < 1 min)

``--official DIR`` names a folder holding the three checkouts under their
repository names: ``encoder4editing`` (omertov), ``stylegan2-pytorch``
(rosinality) and ``w-plus-adapter`` (csxmli2016). Clone them yourself; nothing is
vendored. Their JIT-compiled CUDA ops are stubbed at import and the official
code's own pure-PyTorch paths run instead (on CUDA too), so no nvcc is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .harness import Row, find_official, load_average, machine

CASES = ("e4e", "memory", "stylegan2", "wplus")


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, default=None, help="folder with the three official checkouts")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds per case (default 8; 3 quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--only", default=",".join(CASES), help=f"comma list of cases: {', '.join(CASES)}")
    ap.add_argument(
        "--precision",
        choices=("fp32", "low", "all"),
        default="all",
        help="fp32 rows, the low-precision rows (fp16 on CUDA, bf16 on a CPU with oneDNN bf16), or both",
    )
    ap.add_argument("--quick", action="store_true", help="reduced sizes and rounds: proves the script runs (CI)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows and the machine to this JSON file")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table to this markdown file")
    return ap.parse_args(argv)


def _low_precisions(device: torch.device) -> tuple[list[torch.dtype], str]:
    """fp16 (and bf16 where native) on CUDA; bf16 on a CPU whose oneDNN has it; else none, with the reason."""
    from likeness.models.inversion.precision import fast_low_precision

    if device.type == "cuda":
        return [torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else []), ""
    dtype = fast_low_precision(device)
    if dtype is None:
        return [], "low precision not run: this device has no fast bf16/fp16 (Likeness runs e4e in fp32 here)"
    return [dtype], ""


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    from . import cases_gan, cases_wplus, memory
    from .harness import likeness

    likeness()
    device = torch.device(args.device)
    quick = args.quick
    rounds = args.rounds or (1 if quick else (20 if device.type == "cuda" else 8))
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = only - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {CASES}")
    notes: list[str] = []
    if device.type == "cuda":
        # fp32 rows mean fp32: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa) and the
        # parity checks compare implementations, not TF32 rounding
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        notes.append("CUDA: TF32 disabled, so fp32 rows are true fp32")
    size = 64 if quick else 256
    batches = (1, 2) if quick else (1, 8)
    rows: list[Row] = []
    lows, why = _low_precisions(device) if args.precision != "fp32" else ([], "")
    if why:
        notes.append(why)
    e4e_root = find_official(args.official, "encoder4editing")
    if "e4e" in only:
        fp32 = args.precision != "low"
        rows += cases_gan.e4e_cases(e4e_root, device, batches if fp32 else (), rounds, lows, size=size)
    if "memory" in only:
        if device.type == "cuda":
            ours, official = cases_gan.e4e_models(e4e_root, device)
            rows += memory.cuda_rows(official, ours, device, batches, size)
            del ours, official
        else:
            rows += memory.cpu_rows(e4e_root, batches, size)
    if "stylegan2" in only:
        sizes = (32,) if quick else (256, 1024)
        root = find_official(args.official, "stylegan2-pytorch")
        rows += cases_gan.sg2_cases(root, device, rounds, sizes, lows, fp32=args.precision != "low")
    if "wplus" in only:
        root = find_official(args.official, "w-plus-adapter")
        # a UNet runs in fp32 on a CPU in ComfyUI by default; the fp16/bf16 UNet rows are a GPU matter
        unet_lows = lows if device.type == "cuda" else []
        rows += cases_wplus.wplus_cases(root, device, rounds, quick, unet_lows, fp32=args.precision != "low")
    meta = {"machine": machine(device), "device": str(device), "rounds": rounds, "quick": quick, "notes": notes}
    return rows, meta


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown(rows: list[Row], meta: dict) -> str:
    """The result table: ratio (median of per-round ratios, min-max, n), median times, parity."""
    lines = [
        f"Machine: {meta['machine']}; device {meta['device']}; load average at the end {meta.get('load', 'n/a')}.",
        "",
        "| measure | ours / baseline | min–max | n | ours | baseline | parity (max abs) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = r.extra.get("unit", "s")
        lines.append(
            f"| {r.case} | {_fmt(r.ratio, '.3f')} | "
            + (f"{r.ratio_min:.3f}–{r.ratio_max:.3f}" if r.ratio_min is not None else "")
            + f" | {r.n} | {_fmt(r.ours_s, '.3f')} {unit} | "
            + (f"{r.base_s:.3f} {unit} ({r.baseline})" if r.base_s is not None else "")
            + f" | {_fmt(r.parity, '.2g')} | {r.note} |"
        )
    lines += [f"\n{n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


_MARKERS = {"e4e": "e4e encoder", "memory": "e4e peak memory", "stylegan2": "StyleGAN2", "wplus": "attn2"}


def _check(rows: list[Row], only: str) -> None:
    """Reduced mode is a smoke test of the benchmark code: each case ran and every row has a finite, positive time."""
    missing = [c for c in only.split(",") if c.strip() and not any(_MARKERS[c.strip()] in r.case for r in rows)]
    bad = [r.case for r in rows if not 0 < r.ours_s < float("inf")]
    if missing or bad:
        raise SystemExit(f"benchmark cases without rows: {missing}; rows without a valid figure: {bad}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows, meta = run(args)
    meta["load"] = load_average()
    meta["seconds"] = round(time.perf_counter() - start, 1)
    if args.quick:
        _check(rows, args.only)
    text = markdown(rows, meta)
    sys.stdout.write(text)
    sys.stdout.write(f"({meta['seconds']} s)\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
