"""A smoke SeFi identity: random ID tokens around the smoke CLIP's own "person" embedding.

Written by ``likeness smoke-models`` as ``likeness_identities/likeness_sefi_person.safetensors``, the
name the SeFi learn workflow saves under, so the SeFi generation workflows run end to end without
first learning an identity. Its init embedding is
row 2533 (CLIP-L's token ``person</w>``) of the smoke checkpoint's token embedding, regenerated bit
for bit from the checkpoint's seed, so weight 0 on Apply ID Tokens really is the plain word "person".
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.finetune import Provenance
from ...models.sefi.identity import SeFiIdentity
from ...models.sefi.tokens import IdTokens
from .sd15_layout import sd15_smoke_state_dict

__all__ = ["SMOKE_SEFI_IDENTITY", "PERSON_TOKEN", "smoke_sefi_identity", "write_smoke_sefi_identity"]

SMOKE_SEFI_IDENTITY = "likeness_sefi_person.safetensors"
PERSON_TOKEN = 2533  # CLIP ViT-L/14 BPE id of "person</w>"
_EMBEDDING_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"


def smoke_sefi_identity(seed: int = 0) -> SeFiIdentity:
    """Random per-stage tokens (person + noise of the embedding's own scale), marked as smoke data."""
    table = sd15_smoke_state_dict("full", seed=seed, keys=[_EMBEDDING_KEY])[_EMBEDDING_KEY]
    person = table[PERSON_TOKEN].float()
    g = torch.Generator().manual_seed(seed + 15)
    scale = float(person.std())
    keys = person + scale * torch.randn(5, person.numel(), generator=g)
    values = person + scale * torch.randn(5, person.numel(), generator=g)
    tokens = IdTokens(keys, values, person, "person", {"smoke": "random tokens, not learned"})
    return SeFiIdentity(tokens, Provenance([], 0, "", extra={"smoke": True, "seed": seed}))


def write_smoke_sefi_identity(path: str | Path, seed: int = 0) -> Path:
    """Write :func:`smoke_sefi_identity` to ``path`` (any suffix: the smoke writer passes a ``.partial`` name)."""
    path = Path(path)
    written = smoke_sefi_identity(seed).save(path.with_name(path.name + ".safetensors"))
    return written.replace(path)
