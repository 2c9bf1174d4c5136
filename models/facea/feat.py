"""FaceA-Net's [feat] vectors: learned text-encoder OUTPUT vectors (HiPer-style).

For each task prompt (e.g. ``"a woman left eye"``) the frozen text encoder gives a context
``[77, D]`` (D = 768 for SD1.5's CLIP-L): position 0 is the start token, positions
``1 .. n`` the ``n`` word tokens, then the end token and padding. The [feat] parameterisation
replaces the outputs at the first ``count`` positions right after the words, ``n + 1 .. n + count``
(the end-token position and the padding after it), by trainable vectors initialised from those
very outputs (HiPer, Han et al. 2023, optimises the same kind of post-encoder vectors). They live
in the encoder's output space, so they are CONDITIONING edits, not ``embedding:`` files.

At inference FaceA-Net concatenates along the token axis ``T'_id = T_id + T_face + every T_v``,
each ``T_*`` being the 77-token context with its learned vectors in place
(:func:`concat_contexts`); that is ComfyUI's ``ConditioningConcat`` semantics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import LikenessError

__all__ = ["PromptSlot", "FeatVectors", "with_vectors", "concat_contexts"]


@dataclass(frozen=True)
class PromptSlot:
    """Where a task prompt's [feat] vectors sit in its encoded context.

    Attributes:
        task: task name (``face``, ``eye_left``, ...).
        prompt: the prompt text.
        word_count: number of word tokens n (between the start token and the end token).
        count: number of [feat] vectors.
        length: context length (77 for CLIP).
    """

    task: str
    prompt: str
    word_count: int
    count: int
    length: int = 77

    def __post_init__(self) -> None:
        if self.word_count < 1 or self.count < 1 or self.start + self.count > self.length:
            raise LikenessError(
                f"prompt {self.prompt!r} has {self.word_count} word tokens; {self.count} [feat] vectors after them "
                f"do not fit into {self.length} positions. Use a shorter prompt or fewer vectors."
            )

    @property
    def start(self) -> int:
        """First [feat] position: right after the words (the start token is position 0)."""
        return 1 + self.word_count

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "word_count": self.word_count, "count": self.count, "length": self.length}

    @classmethod
    def from_dict(cls, task: str, d: Mapping) -> PromptSlot:
        return cls(task, str(d["prompt"]), int(d["word_count"]), int(d["count"]), int(d.get("length", 77)))


def with_vectors(context: torch.Tensor, slot: PromptSlot, vectors: torch.Tensor) -> torch.Tensor:
    """``context`` ``[L, D]`` with rows ``slot.start .. start + count`` replaced by ``vectors`` (differentiable)."""
    if context.shape[0] != slot.length or vectors.shape != (slot.count, context.shape[1]):
        raise LikenessError(
            f"[feat] vectors for {slot.prompt!r}: context {tuple(context.shape)} and vectors {tuple(vectors.shape)} do "
            f"not match {slot.count} vectors in a {slot.length}-token context."
        )
    v = vectors.to(context.dtype)
    return torch.cat([context[: slot.start], v, context[slot.start + slot.count :]], dim=0)


def concat_contexts(contexts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[L_i, D]`` contexts -> ``[1, sum L_i, D]`` (token-axis concatenation)."""
    if not contexts:
        raise LikenessError("no prompt contexts to concatenate")
    return torch.cat(list(contexts), dim=0)[None]


class FeatVectors(torch.nn.Module):
    """The trainable [feat] vectors of every task prompt.

    Args:
        slots: ``{task: PromptSlot}``.
        contexts: ``{task: [L, D]}`` frozen encoder outputs of each prompt (kept as buffers).
        vectors: optional ``{task: [count, D]}`` initial vectors (continuing a saved identity);
            default: the prompt's own outputs at the [feat] positions.
    """

    def __init__(
        self,
        slots: Mapping[str, PromptSlot],
        contexts: Mapping[str, torch.Tensor],
        vectors: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if set(slots) != set(contexts):
            raise LikenessError(f"prompt slots {sorted(slots)} and contexts {sorted(contexts)} differ")
        self.slots = dict(slots)
        self.tasks = tuple(slots)
        self.vectors = torch.nn.ParameterDict()
        for task, slot in self.slots.items():
            ctx = contexts[task].detach().float()
            if ctx.ndim == 3 and ctx.shape[0] == 1:
                ctx = ctx[0]
            if ctx.ndim != 2 or ctx.shape[0] != slot.length:
                raise LikenessError(f"context of {slot.prompt!r} must be [{slot.length}, D], got {tuple(ctx.shape)}")
            self.register_buffer(f"context_{task}", ctx.clone())
            init = ctx[slot.start : slot.start + slot.count] if vectors is None else vectors[task].detach().float()
            with_vectors(ctx, slot, init)  # validates the shape
            self.vectors[task] = torch.nn.Parameter(init.clone())

    def base_context(self, task: str) -> torch.Tensor:
        """The frozen encoder output ``[L, D]`` of ``task``'s prompt."""
        return getattr(self, f"context_{task}")

    def context(self, task: str) -> torch.Tensor:
        """``[L, D]`` context of ``task`` with its current vectors (differentiable w.r.t. the vectors)."""
        if task not in self.slots:
            raise LikenessError(f"no [feat] prompt for task {task!r}; have {list(self.tasks)}")
        return with_vectors(self.base_context(task), self.slots[task], self.vectors[task])

    def contexts(self, tasks: Sequence[str]) -> torch.Tensor:
        """``[B, L, D]``: one context per entry of ``tasks`` (a batch may mix tasks)."""
        cache = {t: self.context(t) for t in dict.fromkeys(tasks)}
        return torch.stack([cache[t] for t in tasks])

    def exported(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Detached CPU float32 copies ``({task: context [L,D]}, {task: vectors [count,D]})``."""
        ctx = {t: self.base_context(t).detach().cpu().float().clone() for t in self.tasks}
        vec = {t: self.vectors[t].detach().cpu().float().clone() for t in self.tasks}
        return ctx, vec
