"""Optional last stage of ``python -m models.cli demo``: SD1.5 images conditioned on the swept W+ codes.

Uses a local diffusers SD1.5 folder (``StableDiffusionPipeline.from_pretrained(...,
local_files_only=True)``, never downloads) with the W+ adapter installed on its UNet
(:func:`apply_wplus_adapter_to_unet`) and the context ``[text | WProj(W)]`` /
``[negative text | WProj(0)]`` (:func:`encode_context`, the official CFG pairing). The
stage-2 "20 % delay" of the official notebook is reproduced by running
the first ``int(0.2 * steps) + 1`` steps at scale 0 and switching to ``scale`` from a
step-end callback.

Needs ``diffusers`` and ``transformers`` (the CLIP text encoder); the dev venv has no
``transformers``, so only the argument checks are tested there.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...models.errors import LikenessError

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_NEGATIVE",
    "check_sd15_diffusers_dir",
    "require_sd15_packages",
    "generate_sd15",
]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a photo of a person"
#: The W+ adapter notebook's negative prompt.
DEFAULT_NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"
START_EMBED_RATIO = 0.2


def check_sd15_diffusers_dir(path: str | Path) -> Path:
    """Check that ``path`` looks like a local diffusers SD1.5 pipeline folder.

    Required: ``model_index.json`` and the ``unet``, ``vae``, ``text_encoder``,
    ``tokenizer`` and ``scheduler`` sub-folders (what ``save_pretrained`` writes).

    Raises:
        LikenessError: the folder or a part is missing (the message names it).
    """
    root = Path(path)
    if not root.is_dir():
        raise LikenessError(
            f"--sd15-diffusers {str(path)!r} is not a folder. Give a local diffusers SD1.5 pipeline folder "
            "(the output of StableDiffusionPipeline.save_pretrained, with model_index.json)."
        )
    if not (root / "model_index.json").is_file():
        raise LikenessError(
            f"{root} has no model_index.json, so it is not a diffusers pipeline folder. A single-file .safetensors "
            "checkpoint does not work here; convert it with diffusers (StableDiffusionPipeline.from_single_file(...)"
            ".save_pretrained(DIR)) or use the ComfyUI workflows."
        )
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (root / p).is_dir()]
    if missing:
        raise LikenessError(f"{root} is missing the pipeline part(s) {missing}; re-save the full SD1.5 pipeline there.")
    return root


def require_sd15_packages() -> None:
    """Raise a clear error when diffusers or transformers is not installed."""
    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise LikenessError(
            f"--sd15-diffusers needs the Python package(s) {missing} (SD1.5's CLIP text encoder lives in "
            f"transformers): pip install {' '.join(missing)}"
        )


def _load_pipeline(root: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(root), local_files_only=True, safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate_sd15(
    sd15_dir: str | Path,
    adapter_path: str | Path,
    codes: torch.Tensor,
    labels: Sequence[str],
    out_dir: str | Path,
    *,
    prompt: str = DEFAULT_PROMPT,
    negative_prompt: str = DEFAULT_NEGATIVE,
    steps: int = 30,
    guidance: float = 7.5,
    scale: float = 1.0,
    size: int = 512,
    seed: int = 0,
) -> list[Path]:
    """One SD1.5 image per W+ code, written as ``out_dir/sd15_<i>.png``.

    Args:
        sd15_dir: local diffusers SD1.5 folder (checked by :func:`check_sd15_diffusers_dir`).
        adapter_path: ``wplus_adapter.bin`` (official layout).
        codes: absolute W+ ``[N, 18, 512]`` float32.
        labels: one label per code (logged).
        out_dir: output folder.
        prompt, negative_prompt: text prompts.
        steps: sampler steps of the folder's scheduler.
        guidance: classifier-free guidance scale.
        scale: W+ adapter λ after the 20 % delay.
        size: image side in pixels (multiple of 8).
        seed: the same seed (same initial noise) for every code.

    Returns:
        The written PNG paths, in code order.
    """
    from ...models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet, encode_context, set_wplus_scale
    from ...models.wplus_adapter.model import load_wplus_adapter

    root = check_sd15_diffusers_dir(sd15_dir)
    require_sd15_packages()
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (18, 512) or codes.shape[0] != len(labels):
        raise ValueError(f"need W+ codes [N, 18, 512] and N labels; got {tuple(codes.shape)} and {len(labels)} labels")
    pipe = _load_pipeline(root)
    adapter = load_wplus_adapter(adapter_path)
    apply_wplus_adapter_to_unet(pipe.unet, adapter, scale=0.0)
    start_step = int(START_EMBED_RATIO * steps)
    text, negative = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative_prompt)
    uncond = encode_context(negative, None, adapter)

    def switch_on(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        if step == start_step:
            set_wplus_scale(pipeline.unet, scale)
        return kwargs

    out = Path(out_dir)
    paths: list[Path] = []
    for i, (code, label) in enumerate(zip(codes, labels, strict=True)):
        set_wplus_scale(pipe.unet, 0.0)
        logger.info(
            "demo: SD1.5 image %d/%d (%s, %d steps, W+ from step %d)", i + 1, len(labels), label, steps, start_step + 1
        )
        result = pipe(
            prompt_embeds=encode_context(text, code[None].float(), adapter),
            negative_prompt_embeds=uncond,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(seed),
            callback_on_step_end=switch_on,
            output_type="np",
        )
        arr = np.clip(np.asarray(result.images[0]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        path = out / f"sd15_{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths
