"""Per-stage key and value contexts of one prompt, and swapping them into a UNet call's batch.

A prompt containing V* is encoded eleven times by the frozen text encoder: once
with the base vector in V*'s slot (the ordinary conditioning tensor), and once
per stage with that stage's key token and with its value token. At a UNet call in
stage ``s`` every cross-attention then takes its keys from ``keys[s]`` and its
values from ``values[s]`` for the rows of that prompt; all other rows (the
negative prompt, prompts without V*) keep their own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .stages import NUM_STAGES

__all__ = ["PromptStages", "swap_contexts"]


@dataclass(frozen=True)
class PromptStages:
    """The encodings of one prompt.

    Attributes:
        base: ``[1, L, C]`` the prompt with the base vector in every V* slot (what the
            conditioning tensor holds).
        keys: ``[5, L, C]`` the prompt with stage ``i``'s key token in V*'s slot (row 4 = noisy end).
        values: ``[5, L, C]`` the same with the value tokens.
    """

    base: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        if self.base.ndim != 3 or self.base.shape[0] != 1:
            raise ValueError(f"base context must be [1, L, C], got {tuple(self.base.shape)}")
        want = (NUM_STAGES, *self.base.shape[1:])
        for name in ("keys", "values"):
            if tuple(getattr(self, name).shape) != want:
                raise ValueError(f"{name} contexts must be {want}, got {tuple(getattr(self, name).shape)}")

    @property
    def length(self) -> int:
        """Tokens L of the prompt (77 per section)."""
        return int(self.base.shape[1])

    def matches(self, context: torch.Tensor, atol: float = 1e-3) -> bool:
        """Whether ``context`` ``[1 or B, L', C]`` is this prompt's base encoding (tiled ``L'/L`` times).

        The conditioning may have been cast (fp16) or padded by repetition when batched with
        a longer prompt; any other change (concatenation, averaging) makes it a different
        prompt, for which the stage contexts would be wrong.
        """
        if context.ndim != 3 or context.shape[-1] != self.base.shape[-1] or context.shape[1] % self.length:
            return False
        ref = self.base.to(context.device, torch.float32).repeat(1, context.shape[1] // self.length, 1)
        return bool(torch.allclose(context.float(), ref.expand(context.shape[0], -1, -1), atol=atol, rtol=1e-3))

    def stage(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keys [1, L, C], values [1, L, C])`` of one stage."""
        return self.keys[stage : stage + 1], self.values[stage : stage + 1]


def swap_contexts(
    context: torch.Tensor,
    value: torch.Tensor,
    chunks: Sequence[PromptStages | None],
    stage: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value contexts of a batched UNet call with V* prompts split by stage.

    Args:
        context: ``[B, L, C]`` the key context of the call (chunks of ``B / len(chunks)`` rows).
        value: ``[B, L, C]`` the value context (usually the same tensor).
        chunks: per chunk of the batch, the prompt's :class:`PromptStages` or None to keep it.
        stage: the stage of this call (0 = clean end, 4 = noisy end).

    Returns:
        ``(keys [B, L, C], values [B, L, C])`` in ``context``'s dtype and device; the inputs
        themselves when no chunk carries stages.
    """
    if not any(c is not None for c in chunks):
        return context, value
    batch, length, _ = context.shape
    if batch % len(chunks):
        raise ValueError(f"batch {batch} is not a multiple of the {len(chunks)} chunks")
    rows = batch // len(chunks)
    keys, values = [], []
    for j, data in enumerate(chunks):
        rows_k, rows_v = context[j * rows : (j + 1) * rows], value[j * rows : (j + 1) * rows]
        if data is not None:
            if length % data.length:
                raise ValueError(f"context has {length} tokens, not a multiple of the prompt's {data.length}")
            k, v = data.stage(stage)
            tile = (rows, length // data.length, 1)
            rows_k = k.to(context.device, context.dtype).repeat(*tile)
            rows_v = v.to(value.device, value.dtype).repeat(*tile)
        keys.append(rows_k)
        values.append(rows_v)
    return torch.cat(keys), torch.cat(values)
