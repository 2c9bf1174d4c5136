"""Inputs and outputs shared by the FaceA training nodes (Train Face, Transplant Attribute)."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..models.facea import LOCAL_TASKS, LORA_TARGETS, LOSS_REGIONS, overlay_masks
from .finetune_common import loss_curve_tensor
from .patching.facea import TRAINING_DTYPES
from .sockets import FaceAIdentityType, FaceAnalyzerType, LoraModel

__all__ = ["CATEGORY", "ATTRIBUTES", "common_inputs", "train_inputs", "OUTPUTS", "outputs"]

CATEGORY = "likeness/facea"
#: Transplant choices -> local tasks trained.
ATTRIBUTES = {"eyes": ("eye_left", "eye_right"), **{t: (t,) for t in LOCAL_TASKS}}


def _lr(name: str, default: float, what: str) -> io.Float.Input:
    return io.Float.Input(
        name,
        default=default,
        min=0.0,
        max=1.0,
        step=1e-6,
        round=1e-7,
        advanced=True,
        tooltip=f"AdamW learning rate of the {what} (paper: {default:g}).",
    )


def common_inputs(steps: int) -> list:
    return [
        io.Int.Input(
            "steps",
            default=steps,
            min=1,
            max=10000,
            tooltip="Optimisation steps. The paper recommends 600 (more overfits: the ID prompt stops "
            "working and stylised outputs drift to the photos' style); a transplant needs about 100.",
        ),
        io.Int.Input(
            "batch_size",
            default=4,
            min=1,
            max=16,
            tooltip="Samples per task per step (paper: 4). Each step runs 2 x batch_size samples (global "
            "face task + one random local task); lower it if you run out of memory.",
        ),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate="fixed",  # the frontend adds it to any "seed": keep it fixed
            tooltip="Seed of the training draws (photos, timesteps, noise, local task): same inputs and seed "
            "give the same identity.",
        ),
        _lr("lora_lr", 1.2e-4, "UNet LoRA"),
        _lr("feat_lr", 2e-3, "[feat] vectors"),
        io.Combo.Input(
            "loss_region",
            options=list(LOSS_REGIONS),
            default="mask",
            advanced=True,
            tooltip="'mask': epsilon loss averaged inside each task's mask grown by one latent pixel "
            "(default); 'latent': over the whole latent (the paper does not say which it used).",
        ),
        io.Combo.Input(
            "training_dtype",
            options=list(TRAINING_DTYPES),
            default="auto",
            advanced=True,
            tooltip="Compute dtype while training: 'auto' = bf16 on GPUs that support it, else fp32. The "
            "LoRA and the vectors are always kept in fp32.",
        ),
        io.Boolean.Input(
            "gradient_checkpointing",
            default=True,
            advanced=True,
            tooltip="Recompute UNet activations in the backward pass: much less memory, about 30% slower.",
        ),
        io.Combo.Input(
            "on_no_face",
            options=["error", "skip"],
            default="error",
            advanced=True,
            tooltip="A photo without a detectable face: 'error' stops with a message naming it; 'skip' "
            "trains on the others. With several faces the largest is used.",
        ),
        FaceAnalyzerType.Input(
            "face_analyzer",
            optional=True,
            tooltip="Optional face analyser (default: the embedded offline backend; 68-point "
            "landmarks give tighter eye/nose/mouth masks). insightface packs are non-commercial.",
        ),
    ]


OUTPUTS = [
    FaceAIdentityType.Output("identity", tooltip="The trained identity: save it, or apply it to the SD1.5 model."),
    LoraModel.Output(
        "lora", tooltip="The UNet LoRA alone as ComfyUI's LORA_MODEL (Save LoRA Weights, Load LoRA Model)."
    ),
    io.Image.Output("loss_curve", tooltip="Loss per step (light) and its moving average (dark)."),
    io.Image.Output(
        "crops",
        tooltip="The training crops with the task masks tinted (face blue, eyes red/orange, "
        "nose green, mouth magenta): check them before long runs.",
    ),
    io.String.Output("info", tooltip="Photos and faces used, time per step, final loss."),
]


def outputs(result) -> io.NodeOutput:
    curve = loss_curve_tensor(result.losses, result.first_step, title="FaceA loss")
    crops = torch.stack([overlay_masks(c) for c in result.crops])
    return io.NodeOutput(
        result.identity, dict(result.identity.lora), curve, crops, result.info, ui=ui.PreviewText(result.info)
    )


def train_inputs() -> list:
    """The advanced inputs only Train Face has (LoRA rank and layers, vectors, local tasks, crop geometry)."""
    return [
        io.Int.Input("rank", default=48, min=1, max=256, advanced=True, tooltip="LoRA rank (paper: 48); alpha = rank."),
        io.Int.Input(
            "feat_tokens",
            default=0,
            min=0,
            max=16,
            advanced=True,
            tooltip="[feat] vectors per prompt; 0 = by class word (man 3, woman 4, person 4).",
        ),
        *[
            io.Boolean.Input(
                f"train_{t}",
                default=True,
                advanced=True,
                tooltip=f"Include the local task '{t.replace('_', ' ')}' (one local task is drawn per step).",
            )
            for t in LOCAL_TASKS
        ],
        io.Combo.Input(
            "lora_targets",
            options=list(LORA_TARGETS),
            default="attention",
            advanced=True,
            tooltip="Layers with a LoRA: 'attention' (q/k/v/out of every attention, diffusers' "
            "default), 'transformer' (+ feed-forward, proj_in/out), 'all' (every layer, as "
            "TrainLoraNode).",
        ),
        io.Int.Input(
            "resolution",
            default=512,
            min=64,
            max=1024,
            step=8,
            advanced=True,
            tooltip="Crop size in pixels (paper: 512).",
        ),
        io.Float.Input(
            "crop_factor",
            default=2.0,
            min=1.2,
            max=4.0,
            step=0.1,
            advanced=True,
            tooltip="Crop side / face-box side. Use the same crop factor in Face Refine.",
        ),
        io.Int.Input(
            "mask_grow",
            default=8,
            min=0,
            max=64,
            advanced=True,
            tooltip="Pixels (at 512) every mask is grown by.",
        ),
    ]
