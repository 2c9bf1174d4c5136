"""FaceA-Net training time per step in ComfyUI, and the FLOPs behind a GPU estimate.

ComfyUI's own UNet with the full SD1.5 *inpainting* architecture (a random-weight checkpoint in
the official layout, 9 input channels, written once into ``--models-dir``), the node's training
path (``nodes.facea_train.run_facea_training``: LoRA rank 48 on the attention projections, the
[feat] vectors, AdamW), 512x512 crops (64x64 latents), fp32 on the CPU. One step = ``batch``
samples of the global face task + ``batch`` of one local task, forward and backward.

Printed: seconds per step (mean over the timed steps, after the photos were encoded), the one-off
preparation (face detection, crops, VAE encodes), and the floating-point operations of one step
counted with ``torch.utils.flop_counter`` (forward, backward and the checkpointing recompute),
from which the README derives a GPU estimate.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_facea_train --models-dir DIR [--batches 1 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .comfy_inprocess import _machine, import_comfy_cpu

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "likeness_bench_sd15_inpainting_full.safetensors"


def _options(batch: int, steps: int, checkpointing: bool):
    from likeness.models.facea import FaceARecipe
    from likeness.nodes.facea_train import TrainOptions

    recipe = FaceARecipe(steps=steps, batch_size=batch)
    return TrainOptions(
        recipe, seed=0, class_word="woman", feat_tokens=4, gradient_checkpointing=checkpointing, training_dtype="fp32"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="folder for the full-size inpainting checkpoint")
    parser.add_argument("--photo", default=str(ROOT.parent / "shared/reference/faces/astronaut.png"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes per task")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per batch size")
    args = parser.parse_args(argv)
    import_comfy_cpu(parser)
    import comfy.sd
    from PIL import Image

    from likeness.nodes.facea_train import run_facea_training
    from likeness.tools.smoke.sd15_layout import write_sd15_smoke_checkpoint

    path = Path(args.models_dir) / CHECKPOINT
    if not path.exists():
        write_sd15_smoke_checkpoint(path, variant="full", in_channels=9)
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    rgb = np.asarray(Image.open(args.photo).convert("RGB"))
    photos = torch.from_numpy(rgb.copy()).float()[None] / 255.0
    lines = [
        f"machine: {_machine()}",
        "| batch per task | samples per step | gradient checkpointing | s/step | preparation s |",
        "|---|---|---|---|---|",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    for batch in args.batches:
        t0 = time.perf_counter()
        with torch.inference_mode():
            result = run_facea_training(model, clip, vae, photos, None, _options(batch, args.steps, True))
        prep = time.perf_counter() - t0 - result.seconds_per_step * args.steps
        sys.stdout.write(f"| {batch} | {2 * batch} | on | {result.seconds_per_step:.1f} | {prep:.1f} |\n")
        sys.stdout.flush()
    flops = _count_flops(model, clip, vae, photos)
    sys.stdout.write(f"FLOPs of one step at batch 1 per task (2 samples, checkpointing on): {flops / 1e12:.2f} T\n")
    return 0


def _count_flops(model, clip, vae, photos) -> float:
    """FLOPs of one batch-1 training step (forward + backward + recompute), with the same code path."""
    from torch.utils.flop_counter import FlopCounterMode

    from likeness.nodes import facea_train

    counted = {}
    real = facea_train.train_loop

    def counting_loop(step_fn, optimizer, steps, **kw):
        with FlopCounterMode(display=False) as counter:
            reports = real(step_fn, optimizer, 1, **kw)
        counted["flops"] = counter.get_total_flops()
        return reports

    facea_train.train_loop = counting_loop
    try:
        with torch.inference_mode():
            facea_train.run_facea_training(model, clip, vae, photos, None, _options(1, 1, True))
    finally:
        facea_train.train_loop = real
    return float(counted["flops"])


if __name__ == "__main__":
    raise SystemExit(main())
