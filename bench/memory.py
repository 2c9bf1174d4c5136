"""Peak memory of one e4e forward, ours vs official, each arm measured alone.

CPU: a fresh child process per (arm, batch) builds only that arm, resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``), runs one forward and reads
``VmHWM``; the parent reports the peak above the resident set before the forward
(activations and temporaries) and the process's whole peak. CUDA: in process,
``torch.cuda.max_memory_allocated`` around the forward.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

from .harness import ROOT, Row


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(arm: str, batch: int, official_root: str | None, size: int) -> dict:
    """Build one arm, run one forward at ``batch``; return MiB figures (runs in the child process)."""
    from .cases_gan import e4e_models, official_e4e

    torch.manual_seed(0)
    if arm == "ours":
        model, _ = e4e_models(None, torch.device("cpu"))
    else:
        model = official_e4e(Path(official_root)).eval().requires_grad_(False)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    if arm == "ours":
        x = x.contiguous(memory_format=torch.channels_last)
    gc.collect()
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    with torch.inference_mode():
        model(x)
    peak = _status_kib("VmHWM")
    return {"weights_mib": weights / 2**20, "forward_mib": (peak - before) / 1024, "peak_mib": peak / 1024}


def cpu_rows(official_root: Path | None, batches: tuple[int, ...], size: int) -> list[Row]:
    """One row per batch: our forward peak (and the official one) in MiB, from child processes."""
    rows = []
    for batch in batches:
        found = {}
        for arm in ("ours", "official") if official_root else ("ours",):
            cmd = [sys.executable, "-m", "bench.memory", arm, str(batch), str(official_root or ""), str(size)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"memory child {arm} batch {batch} failed:\n{out.stderr[-2000:]}")
            found[arm] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(_row(batch, found))
    return rows


def cuda_rows(official, ours, device: torch.device, batches: tuple[int, ...], size: int) -> list[Row]:
    rows = []
    for batch in batches:
        found = {}
        for arm, model in (("ours", ours), ("official", official)):
            if model is None:
                continue
            x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            if arm == "ours":
                x = x.contiguous(memory_format=torch.channels_last)
            torch.cuda.synchronize(device)
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode():
                model(x)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
            found[arm] = {
                "weights_mib": weights / 2**20,
                "forward_mib": (peak - before) / 2**20,
                "peak_mib": peak / 2**20,
            }
        rows.append(_row(batch, found))
    return rows


def _row(batch: int, found: dict) -> Row:
    ours = found["ours"]
    base = found.get("official")
    ratio = ours["forward_mib"] / base["forward_mib"] if base and base["forward_mib"] > 0 else None
    note = f"ours: weights {ours['weights_mib']:.0f} MiB, peak {ours['peak_mib']:.0f} MiB"
    if base:
        note += f"; official: weights {base['weights_mib']:.0f} MiB, peak {base['peak_mib']:.0f} MiB"
    return Row(
        f"e4e peak memory of one forward above the weights, batch {batch} (MiB)",
        ours["forward_mib"],
        base["forward_mib"] if base else None,
        ratio,
        n=1,
        note=note,
        extra={"unit": "MiB", **{f"{k}_{arm}": v for arm, d in found.items() for k, v in d.items()}},
    )


if __name__ == "__main__":
    arm_, batch_, root_, size_ = sys.argv[1:5]
    sys.stdout.write(json.dumps(child(arm_, int(batch_), root_ or None, int(size_))) + "\n")
