"""FaceA-Net (AAAI 2025): attribute-driven test-time fine-tuning of an SD1.5 inpainting UNet.

* :mod:`.tasks`: per reference photo the face crop, the face / eye / nose / mouth masks, prompts.
* :mod:`.feat`: the HiPer-style [feat] vectors (text-encoder output vectors after the prompt words).
* :mod:`.train`: the recipe and the Eq. 2 step (one global + one random local task per step).
* :mod:`.identity`: the trained identity (LoRA in ComfyUI's LORA_MODEL format + [feat] vectors).

ComfyUI-free; the ComfyUI side (UNet LoRA injection, VAE/CLIP encoding, nodes) lives in ``nodes/``.
"""

from .feat import FeatVectors, PromptSlot, concat_contexts, with_vectors
from .identity import FEAT_PREFIX, LORA_PREFIX, LORA_TARGETS, FaceAIdentity, is_lora_target, lora_modules
from .tasks import (
    CLASS_WORDS,
    FEAT_TOKENS,
    LOCAL_TASKS,
    TASK_WORDS,
    TASKS,
    ReferenceCrop,
    build_reference_crop,
    dilate_latent_mask,
    face_crop_region,
    feat_token_count,
    latent_mask,
    masked_image,
    overlay_masks,
    task_prompt,
    training_latent_mask,
)
from .train import LOSS_REGIONS, FaceARecipe, TaskLatents, facea_step_fn, make_optimizer

__all__ = [
    "CLASS_WORDS",
    "FEAT_TOKENS",
    "LOCAL_TASKS",
    "TASKS",
    "TASK_WORDS",
    "LOSS_REGIONS",
    "ReferenceCrop",
    "build_reference_crop",
    "face_crop_region",
    "masked_image",
    "overlay_masks",
    "latent_mask",
    "dilate_latent_mask",
    "training_latent_mask",
    "task_prompt",
    "feat_token_count",
    "PromptSlot",
    "FeatVectors",
    "with_vectors",
    "concat_contexts",
    "FaceAIdentity",
    "lora_modules",
    "LORA_TARGETS",
    "is_lora_target",
    "LORA_PREFIX",
    "FEAT_PREFIX",
    "FaceARecipe",
    "TaskLatents",
    "make_optimizer",
    "facea_step_fn",
]
