"""A random-weight FaceA identity file for the smoke SD1.5 UNet layouts.

The file has exactly the layout Save FaceA Identity writes (``models.facea.FaceAIdentity``): a
rank-``rank`` LoRA on every attention projection of the UNet (``attention`` targets), random
[77, 768] prompt contexts and [feat] vectors for the five FaceA prompts, provenance marked as
smoke. Shipped workflows that load an identity run end to end on it; what they draw is noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.facea import LORA_PREFIX, TASKS, FaceAIdentity, PromptSlot, is_lora_target, task_prompt
from ...models.finetune import Provenance
from .sd15_layout import UNET_PREFIX, sd15_checkpoint_shapes

__all__ = ["build_smoke_facea_identity", "write_smoke_facea_identity"]


def build_smoke_facea_identity(variant: str = "reduced", rank: int = 4, seed: int = 0) -> FaceAIdentity:
    """A FaceA identity whose LoRA fits the smoke SD1.5 ``variant`` (any input channels)."""
    g = torch.Generator().manual_seed(seed)
    lora: dict[str, torch.Tensor] = {}
    for key, shape in sd15_checkpoint_shapes(variant).items():
        module = key[len(UNET_PREFIX) : -len(".weight")]
        if not key.startswith(UNET_PREFIX) or not key.endswith(".weight") or len(shape) != 2:
            continue
        if not is_lora_target(module, "attention", True):
            continue
        lora[f"{LORA_PREFIX}{module}.lora_up.weight"] = torch.randn(shape[0], rank, generator=g) * 0.01
        lora[f"{LORA_PREFIX}{module}.lora_down.weight"] = torch.randn(rank, shape[1], generator=g) / shape[1] ** 0.5
        lora[f"{LORA_PREFIX}{module}.alpha"] = torch.tensor(float(rank))
    slots, contexts, vectors = {}, {}, {}
    for task in TASKS:
        prompt = task_prompt("person", task)
        slots[task] = PromptSlot(task, prompt, len(prompt.split()), 4)
        contexts[task] = torch.randn(77, 768, generator=g)
        vectors[task] = torch.randn(4, 768, generator=g)
    provenance = Provenance([], 0, "", extra={"smoke": True, "random_weights": True, "variant": variant})
    meta = {"lora": {"rank": rank, "alpha": float(rank), "targets": "attention", "modules": len(lora) // 3}}
    return FaceAIdentity(lora, slots, contexts, vectors, "person", provenance, meta)


def write_smoke_facea_identity(path: str | Path, variant: str = "reduced", seed: int = 0) -> Path:
    """Write :func:`build_smoke_facea_identity` to ``path`` (atomically)."""
    return build_smoke_facea_identity(variant, seed=seed).save(path)
