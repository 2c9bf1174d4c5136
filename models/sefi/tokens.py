"""SeFi-IDE's identity: five per-stage (key, value) pairs of text-encoder input embeddings.

The pseudo-word V* occupies one slot of the prompt. Instead of one embedding it
has ten: for stage ``i`` (see :mod:`.stages`; row 4 = the noisy end) the prompt
is encoded once with ``keys[i]`` in the slot, and once with ``values[i]``; the
UNet's cross-attention keys come from the first encoding and its values from the
second. The vectors live in the text encoder's **input** embedding space
(768-d for SD1.5's CLIP-L), like a textual-inversion embedding, and go through
the frozen text encoder at every use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import LikenessError
from .stages import NUM_STAGES

__all__ = ["IdTokens", "TENSOR_NAMES"]

TENSOR_NAMES = ("keys", "values", "init_embedding")


@dataclass(frozen=True)
class IdTokens:
    """A learned SeFi identity.

    Attributes:
        keys: ``[5, D]`` float32 key-token embeddings; row ``i`` = stage ``i`` (4 = noisy end).
        values: ``[5, D]`` float32 value-token embeddings, same rows.
        init_embedding: ``[D]`` the input embedding of ``init_word`` (the plain "person"),
            the target of :meth:`blended` at weight 0.
        init_word: the single-token word the vectors started from and blend towards.
        info: training facts (prompt, steps, lr, lambda, ...), JSON-serialisable.
    """

    keys: torch.Tensor
    values: torch.Tensor
    init_embedding: torch.Tensor
    init_word: str = "person"
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.init_embedding.ndim != 1:
            raise LikenessError(
                f"ID tokens: 'init_embedding' must be one vector [D], got shape {tuple(self.init_embedding.shape)}"
            )
        dim = self.init_embedding.shape[0]
        for name in ("keys", "values"):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != NUM_STAGES or t.shape[1] != dim:
                raise LikenessError(
                    f"ID tokens: '{name}' must be [{NUM_STAGES}, D] with D = {dim} (the init embedding's width), "
                    f"got shape {tuple(t.shape)}. The file or the training run is not a SeFi identity."
                )
        for name in TENSOR_NAMES:
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise LikenessError(
                    f"ID tokens: '{name}' holds NaN or infinite values (training diverged). Learn again with a "
                    "lower learning rate."
                )

    @property
    def dim(self) -> int:
        """Width D of the text encoder's input embeddings (768 for SD1.5)."""
        return int(self.init_embedding.shape[0])

    @classmethod
    def initial(cls, init_embedding: torch.Tensor, init_word: str = "person", **info: Any) -> IdTokens:
        """Ten copies of ``init_embedding`` ``[D]``: the starting point of training."""
        e = init_embedding.detach().float().cpu().reshape(-1)
        rows = e[None].repeat(NUM_STAGES, 1)
        return cls(rows.clone(), rows.clone(), e.clone(), init_word, dict(info))

    def pair(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(key [D], value [D])`` of one stage."""
        if not 0 <= stage < NUM_STAGES:
            raise ValueError(f"stage must be in [0, {NUM_STAGES - 1}], got {stage}")
        return self.keys[stage], self.values[stage]

    def blended(self, weight: float) -> IdTokens:
        """Every vector moved towards the init word: ``init + weight * (vector - init)``.

        ``weight`` 1 = the learned identity, 0 = the plain init word ("person") in every
        stage; values above 1 extrapolate.
        """
        if not math.isfinite(weight):
            raise LikenessError(f"ID token weight must be a finite number, got {weight}")
        e = self.init_embedding
        return IdTokens(
            e + weight * (self.keys - e), e + weight * (self.values - e), e, self.init_word, dict(self.info)
        )

    def base_vector(self) -> torch.Tensor:
        """``[D]`` one vector standing for V* where no per-stage split is applied: the mean value token.

        It fills the slot of the plain conditioning tensor (seen by a MODEL without the
        SeFi patch, and by ControlNets); values carry most of the identity.
        """
        return self.values.mean(dim=0)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of an identity file (contiguous float32 on the CPU)."""
        return {name: getattr(self, name).detach().float().cpu().contiguous() for name in TENSOR_NAMES}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], init_word: str, info: Mapping[str, Any]) -> IdTokens:
        """Rebuild from :meth:`tensors`; raises :class:`LikenessError` naming a missing tensor."""
        missing = [n for n in TENSOR_NAMES if n not in tensors]
        if missing:
            raise LikenessError(f"ID tokens: tensors {missing} missing (found {sorted(tensors)})")
        t = {n: tensors[n].detach().float().cpu() for n in TENSOR_NAMES}
        return cls(t["keys"], t["values"], t["init_embedding"], init_word, dict(info))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> IdTokens:
        """A copy with every tensor on ``device`` / in ``dtype``."""
        t = {n: getattr(self, n).to(device=device, dtype=dtype) for n in TENSOR_NAMES}
        return IdTokens(t["keys"], t["values"], t["init_embedding"], self.init_word, dict(self.info))
