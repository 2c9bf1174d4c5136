"""InstantID / PSTF patch overhead inside ComfyUI: per-step time of the patched vs unpatched SDXL UNet.

ComfyUI's own UNet (the smoke SDXL checkpoint: full SDXL architecture, random
weights, fp32 on the CPU), 64x64 latents (512x512 px), batch 2 as CFG makes it
(one uncond + one cond chunk), default CPU attention. Unpatched, InstantID
(identity stream, 70 sites) and PSTF (identity + W+ streams) calls are
interleaved in one run; the table gives medians after a warm-up and the ratio to
the unpatched call. Target: ratio <= 1.06.

Needs a ComfyUI checkout, the smoke models and 18 GB of RAM (measured peak; the fp32 UNet is 10.3 GB):
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_pstf_patch --models-dir DIR [--steps 5]
(``python -m models.cli smoke-models --models-dir DIR --parts sdxl,instantid,pstf`` writes them.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .comfy_inprocess import bench_setup, time_unet_calls, timing_table


def main(argv: list[str] | None = None) -> int:
    args = bench_setup(__doc__, argv, 5)
    import comfy.sd

    from likeness.models.pstf.model import load_pstf_adapter
    from likeness.nodes.patching import LoadedPSTF, apply_pstf
    from likeness.tools.smoke.writers import SMOKE_SDXL_CHECKPOINT

    models = Path(args.models_dir)
    model = comfy.sd.load_checkpoint_guess_config(
        str(models / "checkpoints" / SMOKE_SDXL_CHECKPOINT), output_vae=False, output_clip=False
    )[0]
    g = torch.Generator().manual_seed(0)
    emb, wplus = torch.randn(1, 512, generator=g) * 20, torch.randn(1, 18, 512, generator=g)
    instantid = LoadedPSTF.wrap(load_pstf_adapter(models / "instantid" / "ip-adapter.bin"), "ip-adapter.bin")
    pstf = LoadedPSTF.wrap(load_pstf_adapter(models / "pstf" / "pytorch_model.bin"), "pytorch_model.bin")
    variants = {
        "unpatched": model,
        "InstantID (identity 0.8)": apply_pstf(model, instantid, emb, 0.8, 0.0, 1.0)[0],
        "PSTF (identity 1, W+ 0.6)": apply_pstf(model, pstf, emb, 1.0, 0.0, 1.0, wplus=wplus, weight_wplus=0.6)[0],
    }
    conds = {"c_crossattn": torch.randn(2, 77, 2048, generator=g), "y": torch.randn(2, 2816, generator=g)}
    times = time_unet_calls(variants, torch.randn(2, 4, 64, 64, generator=g), conds, args.steps)
    title = f"ComfyUI SDXL UNet, 64x64 latents, batch 2 (CFG), fp32, {args.steps} timed calls per variant"
    lines = timing_table(times, title)
    unet_bytes = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())
    for loaded in (instantid, pstf):
        size = sum(p.numel() * p.element_size() for p in loaded.adapter.parameters())
        lines.append(
            f"{loaded.adapter.kind} weights: {size / 2**20:.0f} MiB, {loaded.adapter.dtype} "
            f"(UNet: {unet_bytes / 2**20:.0f} MiB)"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
