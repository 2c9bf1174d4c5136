"""SeFi ID tokens in ComfyUI: time per learning step and the sampling overhead of the V* patch.

ComfyUI's own SD1.5 (the smoke checkpoint: full SD1.5 architecture and CLIP-L, random
weights, fp32 on the CPU). One run measures, with medians over the timed calls after a warm-up:

* the baseline: one plain UNet forward at batch 1 (no grad);
* a SeFi learning step (the text encoder on two slot vectors, UNet forward + backward to the
  vectors, AdamW update) with lambda = 0 (no attention capture) and lambda = 0.003 (face-wise
  attention loss at the five 16x16 sites), through ``learn_id_tokens`` as the node runs it;
* sampling: one KSampler step (CFG 7, batch 2) with the plain MODEL and the V* prompt vs the
  SeFi-patched MODEL (per-stage keys and values).

Needs a ComfyUI checkout and the smoke models:
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_sefi --models-dir DIR [--resolution 512] [--steps 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from .comfy_inprocess import _machine, import_comfy_cpu


def _load(parser: argparse.ArgumentParser, models: Path):
    import_comfy_cpu(parser)
    import comfy.sd

    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    return comfy.sd.load_checkpoint_guess_config(str(models / "checkpoints" / SMOKE_CHECKPOINT), output_vae=False)[:2]


def _learning_steps(model, clip, latent, weight: float, steps: int) -> list[float]:
    from likeness.models.sefi.train import TRAINING_PROMPT, SeFiTrainConfig, learn_id_tokens
    from likeness.nodes.patching.facea import training_unet
    from likeness.nodes.patching.sefi_train import slot_encoder, trainable_text_encoder, training_denoiser

    stamps: list[float] = []
    config = SeFiTrainConfig(steps=steps + 1, attention_weight=weight)
    with training_unet(model, "fp32") as unet, trainable_text_encoder(clip), torch.enable_grad():
        encode, person = slot_encoder(clip, TRAINING_PROMPT, "person")
        start = time.perf_counter()
        learn_id_tokens(
            encode,
            training_denoiser(unet, config.sites),
            latent,
            person,
            config,
            on_step=lambda report: stamps.append(time.perf_counter()),
        )
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    return times[1:]


def _sampling_steps(model, positive, negative, side: int, steps: int) -> list[float]:
    import comfy.sample

    noise = torch.randn(1, 4, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    latent = torch.zeros_like(noise)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            comfy.sample.sample(model, noise, 1, 7.0, "euler", "normal", positive, negative, latent, seed=1)
        times.append(time.perf_counter() - start)
    return times[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="a models folder with the smoke models")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (latent = side / 8)")
    parser.add_argument("--steps", type=int, default=2, help="timed calls per variant (after one warm-up)")
    args = parser.parse_args(argv)
    model, clip = _load(parser, Path(args.models_dir))
    from likeness.models.sefi.tokens import IdTokens
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import with_id_tokens, word_embedding

    side = args.resolution
    latent = torch.randn(1, 4, side // 8, side // 8, generator=torch.Generator().manual_seed(2))
    ctx = clip.encode_from_tokens(clip.tokenize("a photo of the face of person"))
    forward = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        with torch.inference_mode():
            model.model.apply_model(latent, torch.tensor([3.0]), c_crossattn=ctx)
        forward.append(time.perf_counter() - start)
    rows = {"UNet forward, batch 1 (baseline)": forward[1:]}
    rows["learning step, lambda 0"] = _learning_steps(model, clip, latent, 0.0, args.steps)
    rows["learning step, lambda 0.003"] = _learning_steps(model, clip, latent, 0.003, args.steps)
    tokens = IdTokens.initial(word_embedding(clip, "person"))
    sclip = with_id_tokens(clip, tokens.blended(1.0), "V*", 1.0)
    positive = sclip.encode_from_tokens_scheduled(sclip.tokenize("a photo of V* on a beach"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    rows["sampling step, plain MODEL (CFG)"] = _sampling_steps(model, positive, negative, side, args.steps)
    rows["sampling step, SeFi MODEL (CFG)"] = _sampling_steps(
        apply_sefi(model)[0], positive, negative, side, args.steps
    )
    base = statistics.median(rows["UNet forward, batch 1 (baseline)"])
    plain = statistics.median(rows["sampling step, plain MODEL (CFG)"])
    lines = [
        f"machine: {_machine()}",
        f"ComfyUI SD1.5 (smoke weights), {side}x{side} px, fp32, {args.steps} timed calls per row after a warm-up",
        "",
        f"{'variant':36s} {'median s':>9s} {'min s':>8s} {'x forward':>10s} {'x plain':>8s}",
    ]
    for name, values in rows.items():
        median = statistics.median(values)
        versus = f"{median / plain:8.3f}" if name.startswith("sampling") else f"{'':8s}"
        lines.append(f"{name:36s} {median:9.2f} {min(values):8.2f} {median / base:10.2f} {versus}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
