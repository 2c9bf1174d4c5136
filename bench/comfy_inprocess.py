"""ComfyUI in-process on the CPU for the benchmarks that time ComfyUI's own UNet (PSTF, FaceA, SeFi).

``import_comfy_cpu`` imports ComfyUI from ``COMFYUI_PATH`` with ``--cpu`` and registers this checkout as the
package ``likeness``; ``time_unet_calls`` / ``timing_table`` time interleaved UNet calls of several MODEL
variants and print the ratios to the first (the unpatched baseline) measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def _machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), {platform.python_version()}"


def import_comfy_and_pack(comfy_path: str) -> None:
    """Import ComfyUI in-process on the CPU and register this checkout as the package ``likeness``."""
    sys.path.insert(0, comfy_path)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "likeness", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    sys.modules["likeness"] = importlib.util.module_from_spec(spec)


def import_comfy_cpu(parser: argparse.ArgumentParser) -> None:
    """Import ComfyUI from ``COMFYUI_PATH`` in-process on the CPU and register this pack as ``likeness``."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        parser.error("set COMFYUI_PATH to a ComfyUI checkout")
    import_comfy_and_pack(comfy_path)


def time_unet_calls(variants: dict, x: torch.Tensor, conds: dict, steps: int) -> dict[str, list[float]]:
    """Seconds per UNet call of each variant (models), interleaved round by round after one warm-up round.

    Each call is one sampler step at CFG: batch ``x`` of an uncond and a cond chunk (``cond_or_uncond`` [1, 0]),
    sigma at step 10 of a 30-step schedule; ``conds`` are the ``apply_model`` keyword inputs. The order of the
    variants rotates from round to round, so a slow spell of a shared machine does not always hit the same one.
    """
    sigmas = torch.linspace(14.6, 0.03, 31)
    sigma = sigmas[10].repeat(x.shape[0])
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for step in range(steps + 1):
        for name in names[step % len(names) :] + names[: step % len(names)]:
            m = variants[name]
            options = dict(m.model_options.get("transformer_options", {}))
            options.update(cond_or_uncond=[1, 0], sigmas=sigma, sample_sigmas=sigmas)
            start = time.perf_counter()
            with torch.inference_mode():
                m.model.apply_model(x, sigma, transformer_options=options, **conds)
            if step > 0:
                times[name].append(time.perf_counter() - start)
    return times


def timing_table(times: dict[str, list[float]], title: str) -> list[str]:
    """Median / min seconds per step and the ratio to the first variant (the unpatched baseline).

    ``ratio`` is the median over rounds of (variant / baseline in the same round); ``min ratio`` compares minima.
    """
    base = next(iter(times.values()))
    header = f"{'variant':28s} {'median s/step':>14s} {'min s':>8s} {'ratio':>7s} {'min ratio':>10s}"
    lines = [f"machine: {_machine()}", title, "", header]
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        median, fastest = statistics.median(values), min(values)
        lines.append(f"{name:28s} {median:14.3f} {fastest:8.3f} {ratio:7.3f} {fastest / min(base):10.3f}")
    lines.append("")
    return lines


def bench_setup(doc: str, argv: list[str] | None, default_steps: int) -> argparse.Namespace:
    """Parse ``--models-dir`` / ``--steps``, then import ComfyUI (``COMFYUI_PATH``) and this pack in-process."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="a models folder with the smoke models")
    parser.add_argument("--steps", type=int, default=default_steps, help="timed calls per variant (after a warm-up)")
    args = parser.parse_args(argv)
    import_comfy_cpu(parser)
    return args
