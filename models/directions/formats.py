"""Readers for every published W+ direction format, recognised by content.

Formats are recognised by **content** (via :func:`..files.checkpoints.load_file`):

=====================================  ==============================================  ===============
content                                 origin                                          default rows
=====================================  ==============================================  ===============
tensor [1,512] / [512]                  InterFaceGAN normal (e4e ``age.pt``, ``smile``) all, range ±5
tensor [1,18,512] / [18,512]            row-wise normal (e4e ``pose.pt``)               all, range ±5
NumPy array [18,512] (``.npy``)         seeprettyface ``latent_directions/*.npy``       0-7, range ±4
NumPy array [1,512] / [512]             generic normal                                   all, range ±5
dict {mean, comp, std}                  GANSpace PCA (``ffhq_pca.pt``)                  config rows
text ``name idx start end [strength]``  GANSpace configs (``ganspace_configs.csv``)     [start, end)
list of [1,18,512]                      w-plus-adapter training bank                    see below
JSON/dict {name: [18,512] (or [512])}   PreciseControl ``all_delta_w_dict.json``        all, range ±3
safetensors with ``direction``          Likeness direction file (below)                 from metadata
=====================================  ==============================================  ===============

The one name-based check: genforce/interfacegan boundaries
(``(pggan|stylegan)_*_boundary.npy``) are [1,512] float64 unit normals, which
by content look exactly like an InterFaceGAN normal, but they belong to
StyleGAN v1 / PGGAN Z or W spaces, so they are refused by name. Likewise a
GANSpace PCA whose file name says ``car`` (e4e's ``cars_pca.pt``) is refused:
its layout is identical to the FFHQ one.

The Likeness direction file is read and written by :mod:`.likeness_file`; GANSpace PCA and
configs files by :mod:`.ganspace`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, LikenessError, a_or_an
from ..files.checkpoints import load_file
from .ganspace import (
    GanspaceConfig,
    add_files,
    clean_pca,
    is_ganspace_pca,
    load_ganspace_configs,
    load_ganspace_set,
    sniff_configs,
)
from .likeness_file import read_likeness_direction
from .types import LATENT_DIM, LICENCE_UNKNOWN, NUM_ROWS, ROW_PRESETS, SHAPES_HELP, Direction, DirectionSet, to_rows

__all__ = ["TRAINING_BANK_NAMES", "refusal_reason", "load_directions", "directions_from_object"]

logger = logging.getLogger(__name__)


# att_direction_scale.pth, each entry identified by cosine 1.0 with a published direction; 3.. are seeprettyface.
TRAINING_BANK_NAMES: tuple[str, ...] = (
    "e4e_age", "e4e_pose", "e4e_smile", "age", "emotion_angry", "emotion_disgust", "emotion_fear",
    "emotion_sad", "emotion_happy", "emotion_surprise", "gender", "glasses", "width", "race_white",
    "angle_pitch", "emotion_angry_2", "eyes_open",
)  # fmt: skip

_GENFORCE = re.compile(r"^(pggan|stylegan)_.*_boundary\.npy$", re.IGNORECASE)


def refusal_reason(path: str | Path) -> str | None:
    """Why a file is refused by name (latent space of another generator), or None."""
    name = Path(path).name
    if _GENFORCE.match(name):
        return (
            f"{path}: this boundary belongs to StyleGAN v1 / PGGAN Z or W space (genforce/interfacegan), "
            "not to StyleGAN2-FFHQ W+; it would produce meaningless edits of e4e codes. It is refused by its "
            "file name because its content ([1,512] unit normal) looks like an e4e direction. Use e4e's "
            "interfacegan_directions (age.pt, smile.pt, pose.pt) instead."
        )
    return None


def directions_from_object(
    obj: Any, path: str | Path, *, licence: str = LICENCE_UNKNOWN, configs: Sequence[GanspaceConfig] | None = None
) -> DirectionSet:
    """Turn a loaded object (see the module table) into a DirectionSet; ``path`` names the source.

    Raises:
        CheckpointError: the object is no known direction format (the message
            names the file and what it holds).
    """
    path = Path(path)
    src = str(path)
    stem = path.stem
    if isinstance(obj, Mapping) and "direction" in obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return read_likeness_direction(path, obj, licence)
    if is_ganspace_pca(obj):
        return add_files(load_ganspace_set(clean_pca(obj, path), configs, name=stem, licence=licence), (path,))
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        is_spf = tuple(obj.shape) == (NUM_ROWS, LATENT_DIM)
        d = Direction(
            name=stem,
            vector=to_rows(obj, src),
            default_rows=ROW_PRESETS["seeprettyface"] if is_spf else ROW_PRESETS["all"],
            recommended_range=(-4.0, 4.0) if is_spf else (-5.0, 5.0),
            source=src,
            licence=licence,
        )
        return DirectionSet(name=stem, directions={stem: d}, files=(path,), licence=licence)
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        d = Direction(name=stem, vector=to_rows(obj, src), source=src, licence=licence)
        return DirectionSet(name=stem, directions={stem: d}, files=(path,), licence=licence)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        known = len(obj) == len(TRAINING_BANK_NAMES)
        dirs = {}
        for i, t in enumerate(obj):
            nm = TRAINING_BANK_NAMES[i] if known else f"bank_{i}"
            spf = known and i >= 3
            dirs[nm] = Direction(
                name=nm,
                vector=to_rows(t, f"{src} [entry {i}]"),
                default_rows=ROW_PRESETS["seeprettyface"] if spf else ROW_PRESETS["all"],
                recommended_range=(-4.0, 4.0) if spf else (-5.0, 5.0),
                source=f"{src} [entry {i}]",
                licence=licence,
                note="w-plus-adapter training augmentation bank",
            )
        return DirectionSet(name=stem, directions=dirs, files=(path,), licence=licence, note="training bank")
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        dirs = {}
        for k, v in obj.items():
            if not isinstance(v, (list, torch.Tensor, np.ndarray)):
                raise CheckpointError(
                    f"{path}: entry {k!r} is {a_or_an(type(v).__name__)}, not a direction array. {SHAPES_HELP}"
                )
            dirs[k] = Direction(
                name=k, vector=to_rows(v, f"{src} [{k!r}]"), recommended_range=(-3.0, 3.0), source=f"{src} [{k!r}]",
                licence=licence,
            )  # fmt: skip
        return DirectionSet(name=stem, directions=dirs, files=(path,), licence=licence)
    what = type(obj).__name__
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        what = f"{what} {getattr(obj, 'dtype', '')} {list(obj.shape)}"
    elif isinstance(obj, Mapping):
        what = f"dict with keys {list(obj)[:8]}"
    raise CheckpointError(f"{path} is not a direction file: it holds {a_or_an(what)}. {SHAPES_HELP}")


def load_directions(
    path: str | Path,
    *,
    configs: str | Path | None = None,
    pca: str | Path | None = None,
    licence: str = LICENCE_UNKNOWN,
) -> DirectionSet:
    """Load any supported direction file (see the module table) as a DirectionSet.

    Args:
        path: the file. A GANSpace configs text file needs ``pca``; a PCA file
            may take ``configs`` (otherwise the e4e demo edits are used).
        configs: GANSpace configs file for a PCA ``path``.
        pca: GANSpace PCA file for a configs ``path``.
        licence: licence to record (discovery fills it from the folder layout).

    Raises:
        CheckpointError: unreadable, refused or unknown content (names the file).
        LikenessError: a configs file without ``pca``.
    """
    path = Path(path)
    reason = refusal_reason(path)
    if reason:
        raise CheckpointError(reason)
    if path.is_file():
        parsed = sniff_configs(path)
        if parsed is not None:
            if pca is None:
                raise LikenessError(
                    f"{path} is a GANSpace configs file; it needs the matching PCA (e.g. ffhq_pca.pt from "
                    "encoder4editing/editings/ganspace_pca). Pass pca=..."
                )
            return add_files(load_ganspace_set(pca, parsed, name=path.stem, licence=licence), (path,))
    obj = load_file(path)
    cfgs = load_ganspace_configs(configs) if configs is not None else None
    out = directions_from_object(obj, path, licence=licence, configs=cfgs)
    if configs is not None:
        add_files(out, (path, Path(configs)))
    return out
