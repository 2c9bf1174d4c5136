"""The Likeness direction file (``.safetensors``): read and write.

* tensor ``direction``: float32 ``[18, 512]`` (or ``[1, 512]``, broadcast to all rows), the W+
  offset per unit strength;
* for GANSpace also ``mean`` [1,512], ``comp`` [K,1,512], ``std`` [K] (the PCA);
* metadata (all strings): ``format`` = ``"likeness-direction"``, ``format_version`` = ``"1"``,
  ``name``, ``latent_space`` = ``"stylegan2-ffhq-wplus"`` (anything else is refused), ``rows``
  (``"all"``, ``"0-7"``, ``"0-3,8"``), ``kind`` (``"linear"`` | ``"ganspace"``),
  ``recommended_min``, ``recommended_max``, ``source``, ``licence``, ``note``, and for GANSpace
  ``pca_idx``, ``start``, ``end``, ``config_strength``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, LikenessError
from .ganspace import clean_pca, is_ganspace_pca
from .types import NUM_ROWS, WPLUS_SPACE, Direction, DirectionSet, GanspaceParams, resolve_rows, rows_to_str, to_rows

__all__ = ["FORMAT_TAG", "read_likeness_direction", "save_direction"]

logger = logging.getLogger(__name__)

FORMAT_TAG = "likeness-direction"


def read_likeness_direction(path: Path, tensors: Mapping[str, torch.Tensor], licence_hint: str) -> DirectionSet:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except (SafetensorError, OSError):
        meta = {}
    src = str(path)
    space = meta.get("latent_space", WPLUS_SPACE)
    if space != WPLUS_SPACE:
        raise CheckpointError(
            f"{path}: latent_space is {space!r}, not {WPLUS_SPACE!r}; Likeness edits StyleGAN2-FFHQ W+ codes only."
        )
    name = meta.get("name") or path.stem
    try:
        rmin = float(meta.get("recommended_min", "-5"))
        rmax = float(meta.get("recommended_max", "5"))
        rows = resolve_rows(meta.get("rows") or "all")
        kind = meta.get("kind", "linear")
        params = None
        if kind == "ganspace":
            pca = clean_pca(tensors, path) if is_ganspace_pca(tensors) else None
            if pca is None:
                raise ValueError("kind 'ganspace' needs mean/comp/std tensors")
            cs = meta.get("config_strength")
            params = GanspaceParams(
                pca=pca,
                pca_idx=int(meta["pca_idx"]),
                start=int(meta["start"]),
                end=int(meta["end"]),
                config_strength=float(cs) if cs not in (None, "", "None") else None,
            )
            if not 0 <= params.pca_idx < pca["std"].shape[0] or not 0 <= params.start < params.end <= NUM_ROWS:
                raise ValueError(f"pca_idx {params.pca_idx} / rows [{params.start}, {params.end}) out of range")
    except (ValueError, KeyError, LikenessError) as exc:
        raise CheckpointError(f"{path}: bad Likeness direction metadata ({exc}); metadata: {meta}.") from None
    d = Direction(
        name=name,
        vector=to_rows(tensors["direction"], src),
        default_rows=rows,
        recommended_range=(rmin, rmax),
        kind=kind,
        ganspace=params,
        source=meta.get("source") or src,
        licence=meta.get("licence") or licence_hint,
        note=meta.get("note", ""),
    )
    return DirectionSet(name=name, directions={name: d}, files=(path,), licence=d.licence)


def save_direction(path: str | Path, direction: Direction) -> Path:
    """Write ``direction`` as a Likeness direction file (``.safetensors``, format in the module docstring)."""
    path = Path(path)
    d = direction
    tensors = {"direction": d.vector.detach().to("cpu", torch.float32).contiguous().clone()}
    meta = {
        "format": FORMAT_TAG,
        "format_version": "1",
        "name": d.name,
        "latent_space": d.latent_space,
        "rows": rows_to_str(d.default_rows),
        "kind": d.kind,
        "recommended_min": repr(float(d.recommended_range[0])),
        "recommended_max": repr(float(d.recommended_range[1])),
        "source": d.source,
        "licence": d.licence,
        "note": d.note,
    }
    if d.kind == "ganspace":
        g = d.ganspace
        for k in ("mean", "comp", "std"):
            tensors[k] = g.pca[k].detach().to("cpu", torch.float32).contiguous().clone()
        meta.update(
            pca_idx=str(g.pca_idx), start=str(g.start), end=str(g.end),
            config_strength="" if g.config_strength is None else repr(float(g.config_strength)),
        )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    logger.info("Likeness directions: saved %r to %s", d.name, path)
    return path
