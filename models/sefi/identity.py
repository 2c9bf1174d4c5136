"""A SeFi identity file: the ten ID-token vectors, their meaning, and where they came from.

One ``.safetensors`` (:mod:`models.finetune.identity_file`, kind ``sefi``):

* ``likeness.sefi.keys`` ``[5, D]``, ``likeness.sefi.values`` ``[5, D]`` float32: row ``i`` is
  stage ``i`` = timesteps ``200 i .. 200 i + 199`` (row 4 = the noisy end);
* ``likeness.sefi.init_embedding`` ``[D]``: the init word's input embedding (blend target);
* metadata ``meta``: ``method``, ``init_word``, ``stages``, ``stage_order``, ``embedding_dim``,
  ``text_encoder``, ``info`` (training settings: prompt, steps, lr, lambda, sites, seed...);
  ``provenance``: photo hash, steps, base-model hash, time, extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, LikenessError
from ..finetune import Provenance, load_identity_file, save_identity_file
from .stages import NUM_STAGES
from .tokens import IdTokens

__all__ = ["SeFiIdentity", "TENSOR_PREFIX", "STAGE_ORDER"]

TENSOR_PREFIX = "likeness.sefi."
STAGE_ORDER = "row i = timesteps 200*i .. 200*i+199; row 0 = clean end, row 4 = noisy end"
METHOD = "SeFi-IDE per-stage key/value ID tokens"


@dataclass(frozen=True)
class SeFiIdentity:
    """The value on an ``ID_TOKENS`` wire: the learned tokens and their provenance.

    Attributes:
        tokens: the ten vectors (+ init embedding, init word, training info).
        provenance: photo hash, steps, base model hash, time, extras.
        text_encoder: the text encoder they belong to (``clip_l`` for SD1.5).
    """

    tokens: IdTokens
    provenance: Provenance
    text_encoder: str = "clip_l"

    def file_meta(self) -> dict:
        return {
            "method": METHOD,
            "init_word": self.tokens.init_word,
            "stages": NUM_STAGES,
            "stage_order": STAGE_ORDER,
            "embedding_dim": self.tokens.dim,
            "text_encoder": self.text_encoder,
            "info": dict(self.tokens.info),
        }

    def save(self, path: str | Path) -> Path:
        """Write the file atomically (an interrupted save leaves nothing behind)."""
        tensors = {TENSOR_PREFIX + k: v for k, v in self.tokens.tensors().items()}
        return save_identity_file(path, tensors, kind="sefi", meta=self.file_meta(), provenance=self.provenance)

    @classmethod
    def load(cls, path: str | Path) -> SeFiIdentity:
        """Read and validate a SeFi identity file; tensors come back bit-identical.

        Raises:
            CheckpointError: naming the file and the field or tensor at fault.
        """
        path = Path(path)
        tensors, meta, provenance = load_identity_file(path, "sefi")
        for name, typ in (("init_word", str), ("stages", int), ("embedding_dim", int), ("text_encoder", str)):
            if not isinstance(meta.get(name), typ):
                raise CheckpointError(
                    f"{path}: identity field 'meta.{name}' must be {typ.__name__}, got {meta.get(name)!r}."
                )
        if meta["stages"] != NUM_STAGES:
            raise CheckpointError(
                f"{path}: identity field 'meta.stages' is {meta['stages']}; this Likeness reads {NUM_STAGES}."
            )
        own = {k[len(TENSOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        info = meta.get("info", {})
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: identity field 'meta.info' must be an object, got {info!r}.")
        try:
            tokens = IdTokens.from_tensors(own, meta["init_word"], info)
        except LikenessError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        if tokens.dim != meta["embedding_dim"]:
            raise CheckpointError(
                f"{path}: identity field 'meta.embedding_dim' is {meta['embedding_dim']} but the tensors are "
                f"{tokens.dim}-d."
            )
        return cls(tokens, provenance, meta["text_encoder"])
