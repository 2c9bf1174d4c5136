"""A trained FaceA-Net identity: the UNet LoRA, the [feat] vectors with their prompts, provenance.

File layout (one ``.safetensors``, :mod:`models.finetune.identity_file`, kind ``facea``):

* LoRA tensors in ComfyUI's ``LORA_MODEL`` key format, which ComfyUI's LoraLoader reads as is:
  ``diffusion_model.<module path>.lora_up.weight`` ``[out, rank]``,
  ``diffusion_model.<module path>.lora_down.weight`` ``[rank, in]`` and
  ``diffusion_model.<module path>.alpha`` (scalar); the weight delta is
  ``alpha / rank * up @ down`` (the module paths are the original LDM / ComfyUI UNet names,
  e.g. ``input_blocks.1.1.transformer_blocks.0.attn1.to_q``);
* ``likeness.facea.<task>.context`` ``[77, D]``: the frozen text-encoder output of the task prompt;
* ``likeness.facea.<task>.vectors`` ``[count, D]``: its learned [feat] vectors;
* metadata ``meta``: ``class_word``, ``tasks`` (prompt, word count, vector count per task), ``lora``
  (rank, alpha, targets, module count), ``recipe``, ``base_model``, ``transplants``.

A stock LoraLoader warns "lora key not loaded" for the ``likeness.facea.*`` tensors and applies the
LoRA; Apply FaceA Identity applies the LoRA and adds the prompts with their vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..finetune import Provenance, load_identity_file, save_identity_file
from .feat import PromptSlot, concat_contexts, with_vectors
from .tasks import CLASS_WORDS, TASKS

__all__ = ["FaceAIdentity", "lora_modules", "LORA_PREFIX", "FEAT_PREFIX", "LORA_TARGETS", "is_lora_target"]

LORA_PREFIX = "diffusion_model."
FEAT_PREFIX = "likeness.facea."
_LORA_SUFFIXES = (".lora_up.weight", ".lora_down.weight", ".alpha")
_ATTENTION = tuple(f".{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
#: Which UNet layers get a LoRA (module-path suffixes; ``all`` = every Linear/Conv2d layer).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    # diffusers' LoRA training default (to_q/to_k/to_v/to_out.0 of every attention): the default
    "attention": _ATTENTION,
    # everything in the transformer blocks: attention, feed-forward, proj_in/proj_out
    "transformer": _ATTENTION + (".ff.net.0.proj", ".ff.net.2", ".proj_in", ".proj_out"),
    # every Linear/Conv2d weight, as ComfyUI's TrainLoraNode (a 9-channel input conv then only fits inpainting UNets)
    "all": (),
}


def is_lora_target(module_path: str, targets: str, is_layer: bool) -> bool:
    """Whether the UNet module ``module_path`` (ComfyUI/LDM name) gets a LoRA under ``targets``.

    Args:
        is_layer: the module is a Linear or Conv2d layer with a weight (only those can take a LoRA).
    """
    if targets not in LORA_TARGETS:
        raise CheckpointError(f"LoRA targets must be one of {list(LORA_TARGETS)}, got {targets!r}")
    if not is_layer:
        return False
    return targets == "all" or module_path.endswith(LORA_TARGETS[targets])


def lora_modules(lora: Mapping[str, torch.Tensor], where: str = "LoRA") -> list[str]:
    """Module paths (without ``diffusion_model.``) of a ``LORA_MODEL`` dict, validated.

    Raises:
        CheckpointError: a key outside the format, a module without its up/down/alpha triple, or
            up/down shapes that do not chain.
    """
    modules: dict[str, set[str]] = {}
    for key in lora:
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), None)
        if not key.startswith(LORA_PREFIX) or suffix is None:
            raise CheckpointError(
                f"{where}: unexpected LoRA key {key!r} (expected {LORA_PREFIX}<module>{_LORA_SUFFIXES})"
            )
        modules.setdefault(key[len(LORA_PREFIX) : -len(suffix)], set()).add(suffix)
    for name, found in modules.items():
        if found != set(_LORA_SUFFIXES):
            raise CheckpointError(f"{where}: LoRA module {name!r} lacks {sorted(set(_LORA_SUFFIXES) - found)}")
        up, down = lora[f"{LORA_PREFIX}{name}.lora_up.weight"], lora[f"{LORA_PREFIX}{name}.lora_down.weight"]
        if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
            raise CheckpointError(
                f"{where}: LoRA module {name!r} has up {tuple(up.shape)} and down "
                f"{tuple(down.shape)}, which do not chain"
            )
    return sorted(modules)


@dataclass(frozen=True)
class FaceAIdentity:
    """The value on a ``FACEA_IDENTITY`` wire.

    Attributes:
        lora: ``LORA_MODEL`` dict (see the module docstring), CPU tensors.
        slots: ``{task: PromptSlot}`` in task order (face first).
        contexts: ``{task: [L, D]}`` frozen encoder outputs of the prompts.
        vectors: ``{task: [count, D]}`` learned [feat] vectors.
        class_word: ``man``, ``woman`` or ``person``.
        provenance: photo hashes, steps, base-model hash, time, extras.
        meta: LoRA settings, recipe, base model description, transplants (JSON-serialisable).
    """

    lora: dict[str, torch.Tensor]
    slots: dict[str, PromptSlot]
    contexts: dict[str, torch.Tensor]
    vectors: dict[str, torch.Tensor]
    class_word: str
    provenance: Provenance
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_word not in CLASS_WORDS:
            raise CheckpointError(f"FaceA identity: class word {self.class_word!r} is not one of {list(CLASS_WORDS)}")
        unknown = [t for t in self.slots if t not in TASKS]
        if "face" not in self.slots or unknown:
            raise CheckpointError(f"FaceA identity: tasks {list(self.slots)} must include 'face' and only {TASKS}")
        for task, slot in self.slots.items():
            if task not in self.contexts or task not in self.vectors:
                raise CheckpointError(f"FaceA identity: task {task!r} has no context or no [feat] vectors")
            with_vectors(self.contexts[task], slot, self.vectors[task])  # validates shapes
        lora_modules(self.lora, "FaceA identity")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.slots)

    @property
    def context_dim(self) -> int:
        return int(self.contexts["face"].shape[-1])

    def task_context(self, task: str) -> torch.Tensor:
        """``[L, D]`` context of one task with its learned vectors."""
        return with_vectors(self.contexts[task], self.slots[task], self.vectors[task])

    def prompt_context(self, tasks: Sequence[str] | None = None) -> torch.Tensor:
        """``[1, L * T, D]``: ``T_face`` then every ``T_v`` (token axis), what Apply appends to ``T_id``."""
        chosen = [t for t in (tasks if tasks is not None else self.tasks) if t in self.slots]
        return concat_contexts([self.task_context(t) for t in chosen])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything the file stores, keyed as described in the module docstring."""
        out = dict(self.lora)
        for task in self.tasks:
            out[f"{FEAT_PREFIX}{task}.context"] = self.contexts[task]
            out[f"{FEAT_PREFIX}{task}.vectors"] = self.vectors[task]
        return out

    def file_meta(self) -> dict:
        return {
            **self.meta,
            "method": "FaceA-Net attribute-driven fine-tuning",
            "class_word": self.class_word,
            "tasks": {t: s.as_dict() for t, s in self.slots.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the identity file atomically (see :func:`models.finetune.save_identity_file`)."""
        return save_identity_file(path, self.tensors(), kind="facea", meta=self.file_meta(), provenance=self.provenance)

    def with_update(self, **changes: object) -> FaceAIdentity:
        """A copy with some fields replaced (e.g. after continued training)."""
        return replace(self, **changes)

    @classmethod
    def load(cls, path: str | Path) -> FaceAIdentity:
        """Read and validate a FaceA identity file; tensors come back bit-identical."""
        path = Path(path)
        tensors, meta, provenance = load_identity_file(path, "facea")
        tasks = meta.get("tasks")
        if not isinstance(tasks, dict) or not tasks:
            raise CheckpointError(f"{path}: identity field 'meta.tasks' is missing or empty.")
        slots, contexts, vectors = {}, {}, {}
        ordered = [t for t in TASKS if t in tasks] + [t for t in tasks if t not in TASKS]  # JSON keys come sorted
        for task in ordered:
            raw = tasks[task]
            try:
                slots[task] = PromptSlot.from_dict(task, raw)
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: identity field 'meta.tasks.{task}' is malformed ({exc}).") from exc
            for kind, store in (("context", contexts), ("vectors", vectors)):
                key = f"{FEAT_PREFIX}{task}.{kind}"
                if key not in tensors:
                    raise CheckpointError(f"{path}: tensor {key!r} is missing.")
                store[task] = tensors[key]
        lora = {k: v for k, v in tensors.items() if not k.startswith(FEAT_PREFIX)}
        rest = {k: v for k, v in meta.items() if k not in ("class_word", "tasks", "method")}
        try:
            return cls(lora, slots, contexts, vectors, str(meta.get("class_word")), provenance, rest)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
