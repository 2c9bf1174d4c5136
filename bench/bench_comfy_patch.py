"""W+ adapter patch overhead inside ComfyUI: per-step time of the patched vs unpatched SD1.5 UNet.

ComfyUI's own UNet (the smoke SD1.5 checkpoint: full SD1.5 architecture, random
weights, fp32 on the CPU), 64x64 latents (512x512 px), batch 2 as CFG makes it
(one uncond + one cond chunk), default CPU attention. Unpatched, patched
(weight 1) and patched (weight 0) calls are interleaved in one run; the table
gives medians after a warm-up and the ratio to the unpatched call.

Needs a ComfyUI checkout and the smoke models:
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_comfy_patch --models-dir DIR [--steps 5]
(``python -m models.cli smoke-models --models-dir DIR`` writes them.)
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


def main(argv: list[str] | None = None) -> int:
    args = bench_setup(__doc__, argv, 5)
    import comfy.sd

    from likeness.models.wplus_adapter.model import load_wplus_adapter
    from likeness.nodes.patching import LoadedWPlusAdapter, apply_wplus_adapter
    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    models = Path(args.models_dir)
    model = comfy.sd.load_checkpoint_guess_config(
        str(models / "checkpoints" / SMOKE_CHECKPOINT), output_vae=False, output_clip=False
    )[0]
    adapter_path = models / "wplus" / "wplus_adapter.bin"
    loaded = LoadedWPlusAdapter.wrap(load_wplus_adapter(adapter_path), adapter_path.name)
    wplus = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    variants = {
        "unpatched": model,
        "patched (weight 1)": apply_wplus_adapter(model, loaded, wplus, 1.0, 0.0, 1.0)[0],
        "patched (weight 0)": apply_wplus_adapter(model, loaded, wplus, 0.0, 0.0, 1.0)[0],
    }
    g = torch.Generator().manual_seed(1)
    inputs = {"c_crossattn": torch.randn(2, 77, 768, generator=g)}
    times = time_unet_calls(variants, torch.randn(2, 4, 64, 64, generator=g), inputs, args.steps)
    lines = timing_table(
        times, f"ComfyUI SD1.5 UNet, 64x64 latents, batch 2 (CFG), fp32, {args.steps} timed calls per variant"
    )
    adapter_bytes = sum(p.numel() * p.element_size() for p in loaded.adapter.parameters())
    unet_bytes = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())
    lines.append(
        f"adapter weights: {adapter_bytes / 2**20:.1f} MiB ({adapter_bytes / unet_bytes:.1%} of the UNet's "
        f"{unet_bytes / 2**20:.0f} MiB)"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
