"""FaceA-Net training driver: photos -> crops and masks -> VAE latents and CLIP contexts -> train_loop.

Shared by Train Face (FaceA) and Transplant Attribute (FaceA). The maths is in
``models.facea``; the UNet side in ``nodes.patching.facea``; this file only moves ComfyUI
objects (IMAGE, VAE, CLIP, MODEL) into the shapes the core expects.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.errors import LikenessError
from ..models.face import apply_policy, create_analyzer, select_batch
from ..models.facea import (
    FaceAIdentity,
    FaceARecipe,
    FeatVectors,
    PromptSlot,
    ReferenceCrop,
    TaskLatents,
    build_reference_crop,
    facea_step_fn,
    make_optimizer,
    masked_image,
    task_prompt,
    training_latent_mask,
)
from ..models.facea.tasks import TASK_WORDS
from ..models.finetune import Provenance, losses_of, tensors_sha256, train_loop
from .face_common import detect_batch
from .finetune_common import TrainingProgress, comfy_interruption, should_stop
from .patching.facea import LoRATraining, check_sd15, training_unet

__all__ = ["TrainOptions", "TrainResult", "train_options", "prepare_crops", "encode_prompts", "run_facea_training"]

logger = logging.getLogger(__name__)
MAX_PHOTOS = 10


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run needs besides the ComfyUI objects."""

    recipe: FaceARecipe
    seed: int = 0
    class_word: str = "person"
    feat_tokens: int = 4
    resolution: int = 512
    crop_factor: float = 2.0
    mask_grow: int = 8
    lora_targets: str = "attention"
    training_dtype: str = "auto"
    gradient_checkpointing: bool = True
    on_no_face: str = "error"


def train_options(common: dict, *, local_tasks: tuple, rank: int, global_task: bool = True, **node) -> TrainOptions:
    """The options of one run from the inputs ``facea_schema.common_inputs`` declares (``common``: steps,
    batch_size, seed, lora_lr, feat_lr, loss_region, training_dtype, gradient_checkpointing, on_no_face) and the
    node's own (``node``: class_word, feat_tokens, resolution, crop_factor, mask_grow, lora_targets)."""
    recipe = FaceARecipe(
        steps=common["steps"],
        batch_size=common["batch_size"],
        lora_lr=common["lora_lr"],
        feat_lr=common["feat_lr"],
        global_task=global_task,
        local_tasks=local_tasks,
        loss_region=common["loss_region"],
        rank=rank,
    )
    run = {k: common[k] for k in ("seed", "training_dtype", "gradient_checkpointing", "on_no_face")}
    return TrainOptions(recipe, **run, **node)


@dataclass
class TrainResult:
    identity: FaceAIdentity
    losses: list[float]
    crops: list[ReferenceCrop]
    info: str
    first_step: int = 1
    seconds_per_step: float = 0.0
    notes: list[str] = field(default_factory=list)


def prepare_crops(images: torch.Tensor, analyzer, opts: TrainOptions) -> tuple[list[ReferenceCrop], str]:
    """Detect the largest face of each photo and build its crop and masks (see ``models.facea.tasks``)."""
    if images.ndim != 4 or not 1 <= images.shape[0] <= MAX_PHOTOS:
        raise LikenessError(
            f"FaceA trains on 1 to {MAX_PHOTOS} reference photos of one person (IMAGE batch [B,H,W,C]); got shape "
            f"{tuple(images.shape)}. The paper uses 3; batch them with an Image Batch node."
        )
    found = detect_batch(analyzer or create_analyzer("embedded"), images)
    chosen, reasons = select_batch(found.faces, "largest", 0)
    kept, report = apply_policy(chosen, opts.on_no_face, found.sizes, reasons=reasons, backend=found.backend)
    if not kept:
        raise LikenessError(
            "no face found in any reference photo, so there is nothing to train on. Give photos with one clear face."
            f"\n{report.summary()}"
        )
    crops = [
        build_reference_crop(
            images[i],
            chosen[i][0],
            index=i,
            resolution=opts.resolution,
            crop_factor=opts.crop_factor,
            mask_grow=opts.mask_grow,
        )
        for i in kept
    ]
    several = [i for i in kept if len(found.faces[i]) > 1]
    lines = [report.summary()]
    if several:
        lines.append(f"photos {several} show several faces: the largest one was used")
    return crops, "\n".join(lines)


def _word_count(clip, tokens: dict) -> int:
    """Word tokens of a one-chunk SD1 tokenisation (between the start token and the first end token)."""
    key = next(iter(tokens))
    chunk = tokens[key][0]
    tokenizer = getattr(clip.tokenizer, getattr(clip.tokenizer, "clip", ""), None)
    end = getattr(tokenizer, "end_token", None)
    ids = [t[0] for t in chunk]
    if end is None or end not in ids[1:]:
        raise LikenessError("FaceA needs SD1.5's CLIP text encoder (start/end tokens); this CLIP is not one.")
    return ids.index(end, 1) - 1


def encode_prompts(clip, class_word: str, tasks, count: int) -> tuple[dict[str, PromptSlot], dict[str, torch.Tensor]]:
    """``({task: PromptSlot}, {task: [77, 768] context})`` for the task prompts."""
    slots, contexts = {}, {}
    for task in tasks:
        prompt = task_prompt(class_word, task)
        tokens = clip.tokenize(prompt)
        cond = clip.encode_from_tokens(tokens)
        if cond.ndim != 3 or tuple(cond.shape[-2:]) != (77, 768):
            raise LikenessError(
                f"FaceA needs the SD1.5 CLIP (contexts [1,77,768]); this CLIP gives {tuple(cond.shape)}. Connect the "
                "CLIP of the SD1.5 (inpainting) checkpoint."
            )
        slots[task] = PromptSlot(task, prompt, _word_count(clip, tokens), count)
        contexts[task] = cond[0].detach().float().cpu()
    return slots, contexts


def _encode(vae, base, pixels: torch.Tensor) -> torch.Tensor:
    return base.process_latent_in(vae.encode(pixels[..., :3])).float()


def encode_latents(vae, base, crops: list[ReferenceCrop], tasks, inpaint: bool) -> tuple[TaskLatents, list[str]]:
    """VAE latents of the crops, latent masks, and (inpainting) latents of the masked crops; plus notes."""
    images = torch.stack([c.image for c in crops])
    x0 = _encode(vae, base, images)
    masks, masked, notes = {}, {}, []
    for task in tasks:
        pixel = torch.stack([c.masks[task] for c in crops])
        masks[task], thin = training_latent_mask(pixel, x0.shape[-2:])
        if thin:
            photos = [crops[i].photo_index for i in thin]
            notes.append(
                f"{TASK_WORDS[task]} of photo(s) {photos} covers less than half a latent pixel: its mask channel "
                "uses every latent pixel it touches (a higher resolution or crop factor avoids this)"
            )
            logger.warning("FaceA: %s", notes[-1])
        if inpaint:
            masked[task] = _encode(vae, base, masked_image(images, pixel))
    return TaskLatents(x0, masks, masked), notes


def _base_file(model) -> str:
    init = getattr(model, "cached_patcher_init", None)
    args = init[1] if isinstance(init, tuple) and len(init) > 1 else ()
    return Path(args[0]).name if args and isinstance(args[0], str) else ""


def run_facea_training(model, clip, vae, images, analyzer, opts: TrainOptions, init: FaceAIdentity | None = None):
    """Train (or continue training) a FaceA identity; returns a :class:`TrainResult`.

    Nothing is written anywhere: saving is the Save FaceA Identity node's job.
    """
    node = "Train Face (FaceA)"
    inpaint = check_sd15(model, node)
    notes = []
    if not inpaint:
        notes.append("not an inpainting model (4 input channels): trained without the mask channels, loss in the mask")
        logger.warning("%s: %s; an SD1.5 inpainting checkpoint gives better results", node, notes[0])
    crops, faces_info = prepare_crops(images, analyzer, opts)
    recipe = opts.recipe
    tasks = init.tasks if init is not None else ("face", *recipe.local_tasks)
    if init is not None:
        slots, contexts, class_word = init.slots, init.contexts, init.class_word
    else:
        slots, contexts = encode_prompts(clip, opts.class_word, tasks, opts.feat_tokens)
        class_word = opts.class_word
    data, mask_notes = encode_latents(vae, model.model, crops, recipe.tasks, inpaint)
    notes += mask_notes
    start = init.provenance.steps if init is not None else 0
    with comfy_interruption(), training_unet(model, opts.training_dtype, opts.gradient_checkpointing) as unet:
        base_hash = tensors_sha256(unet.base.diffusion_model.state_dict())
        lora = LoRATraining(
            unet.base.diffusion_model, opts.lora_targets, recipe.rank, init=init and init.lora, device=unet.device
        )
        feat = FeatVectors(slots, contexts, init.vectors if init is not None else None).to(unet.device)
        data = TaskLatents(
            data.x0.clone().to(unet.device),
            {k: v.clone().to(unet.device) for k, v in data.masks.items()},
            {k: v.clone().to(unet.device) for k, v in data.masked.items()},
        )
        step_fn = facea_step_fn(unet.denoiser, data, feat, recipe, inpaint=inpaint)
        progress = TrainingProgress(recipe.steps, first_step=start + 1, label="FaceA")
        lora.inject()
        try:
            t0 = time.perf_counter()
            reports = train_loop(
                step_fn,
                make_optimizer(lora.parameters(), feat, recipe),
                recipe.steps,
                seed=opts.seed,
                on_step=progress,
                should_stop=should_stop,
                grad_clip=recipe.grad_clip,
                start_step=start,
            )
            per_step = (time.perf_counter() - t0) / max(1, len(reports))
        finally:
            lora.eject()
        trained_lora = lora.state_dict()
        ctx_out, vec_out = feat.exported()
    identity = _identity(
        init, trained_lora, slots, ctx_out, vec_out, class_word, crops, recipe, opts, model, base_hash, start
    )
    info = "\n".join(
        [
            faces_info,
            *notes,
            f"trained {recipe.steps} step(s) in {per_step:.2f} s/step, final loss "
            f"{reports[-1].loss:.4f}; tasks {list(recipe.tasks)}; LoRA {len(lora.adapters)} layers",
        ]
    )
    return TrainResult(identity, losses_of(reports), crops, info, start + 1, per_step, notes)


def _identity(init, lora, slots, contexts, vectors, class_word, crops, recipe, opts, model, base_hash, start):
    """The trained FaceAIdentity with meta and provenance (a transplant keeps and extends the originals)."""
    config = model.model.model_config
    first = lora[next(k for k in lora if k.endswith(".lora_down.weight"))]
    alpha = float(lora[next(k for k in lora if k.endswith(".alpha"))])
    run = {
        **recipe.as_dict(),
        "seed": opts.seed,
        "resolution": opts.resolution,
        "crop_factor": opts.crop_factor,
        "mask_grow": opts.mask_grow,
        "training_dtype": opts.training_dtype,
    }
    photos = [c.photo_sha256 for c in crops]
    dtype = str(model.model.diffusion_model.dtype).removeprefix("torch.")
    if init is None:
        meta = {
            "lora": {
                "rank": int(first.shape[0]),
                "alpha": alpha,
                "targets": opts.lora_targets,
                "modules": len([k for k in lora if k.endswith(".alpha")]),
            },
            "recipe": run,
            "base_model": {"arch": type(config).__name__, "in_channels": int(config.unet_config.get("in_channels", 4))},
        }
        extra = {"base_model_file": _base_file(model), "base_model_hash_of": f"UNet weights as trained on ({dtype})"}
        return FaceAIdentity(
            lora, slots, contexts, vectors, class_word, Provenance(photos, recipe.steps, base_hash, extra=extra), meta
        )
    transplant = {
        "tasks": list(recipe.tasks),
        "steps": recipe.steps,
        "from_step": start,
        "photo_sha256": photos,
        "base_model_sha256": base_hash,
        "recipe": run,
    }
    if init.provenance.base_model_sha256 and base_hash != init.provenance.base_model_sha256:
        logger.warning("FaceA transplant: the MODEL differs from the one the identity was trained on")
    meta = {**init.meta, "transplants": [*init.meta.get("transplants", []), transplant]}
    extra = {**init.provenance.extra, "transplants": [*init.provenance.extra.get("transplants", []), transplant]}
    prov = Provenance(
        init.provenance.photo_sha256, start + recipe.steps, init.provenance.base_model_sha256, extra=extra
    )
    return FaceAIdentity(lora, slots, contexts, vectors, class_word, prov, meta)
