"""Data types of attribute directions in StyleGAN2-FFHQ W+ and W+ row selection.

One canonical in-memory form for every published format (see
the readers in :mod:`.formats`, :mod:`.ganspace` and :mod:`.likeness_file`):

* ``Direction.vector`` is always a float32 tensor ``[18, 512]`` on the CPU: the
  W+ offset of **every** row per unit of strength. A ``[1, 512]`` InterFaceGAN
  normal is repeated over the 18 rows; per-layer deltas keep their rows.
* ``Direction.default_rows`` says which of those rows an edit touches when the
  caller does not choose (seeprettyface: rows 0-7, GANSpace: ``[start, end)``,
  everything else: all 18). Rows outside the selection are never changed.

Row presets (rosinality layer order): ``coarse`` = rows 0-3
(4²-8², pose and face shape), ``middle`` = 4-7 (16²-32², features and
expression), ``fine`` = 8-17 (64²-1024², colour and texture), ``all`` = 0-17,
``seeprettyface`` = 0-7 (the rows w-plus-adapter edits with latent_directions).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ..errors import CheckpointError, LikenessError

__all__ = [
    "NUM_ROWS",
    "LATENT_DIM",
    "WPLUS_SPACE",
    "ROW_PRESETS",
    "LICENCE_E4E",
    "LICENCE_PRECISECONTROL",
    "LICENCE_INTERFACEGAN",
    "LICENCE_SLAB",
    "LICENCE_NVIDIA_NC",
    "LICENCE_UNKNOWN",
    "GanspaceParams",
    "Direction",
    "DirectionSet",
    "RowsSpec",
    "resolve_rows",
    "rows_to_str",
    "SHAPES_HELP",
    "as_f32",
    "to_rows",
]

NUM_ROWS = 18
LATENT_DIM = 512
WPLUS_SPACE = "stylegan2-ffhq-wplus"

ROW_PRESETS: dict[str, tuple[int, ...]] = {
    "coarse": tuple(range(0, 4)),
    "middle": tuple(range(4, 8)),
    "fine": tuple(range(8, 18)),
    "all": tuple(range(0, 18)),
    "seeprettyface": tuple(range(0, 8)),
}

LICENCE_E4E = "MIT (omertov/encoder4editing)"
LICENCE_PRECISECONTROL = "MIT (rishubhpar/PreciseControl)"
LICENCE_INTERFACEGAN = "MIT (genforce/interfacegan)"
LICENCE_SLAB = "NTU S-Lab License 1.0 (csxmli2016/w-plus-adapter): NON-COMMERCIAL"
LICENCE_NVIDIA_NC = (
    "Nvidia Source Code License-NC (seeprettyface latent_directions, redistributed by w-plus-adapter): NON-COMMERCIAL"
)
LICENCE_UNKNOWN = "unknown, check the source"

RowsSpec = Union[None, str, int, slice, Iterable[int]]


@dataclass(frozen=True, eq=False)
class GanspaceParams:
    """What a GANSpace edit needs besides its offset vector (see :func:`.edit.ganspace_delta`).

    Attributes:
        pca: the loaded PCA dict ``{"mean": [1,512], "comp": [K,1,512], "std": [K]}``
            (float32, shared between all directions of one file; never mutated).
        pca_idx: component index k, ``0 <= k < K``.
        start: first W+ row of the published config.
        end: one past the last row (``start < end <= 18``).
        config_strength: the strength column of the config (e.g. -20 for
            ``smile``), in standard deviations; None when the source has none.
            Its sign defines which way "positive" points in offset mode.
    """

    pca: Mapping[str, torch.Tensor]
    pca_idx: int
    start: int
    end: int
    config_strength: float | None = None

    @property
    def sign(self) -> float:
        """+1 or -1: the direction of the published edit (+1 when unknown)."""
        return -1.0 if (self.config_strength is not None and self.config_strength < 0) else 1.0


@dataclass(frozen=True, eq=False)
class Direction:
    """One attribute direction in W+.

    Attributes:
        name: slider name, e.g. ``"age"``.
        vector: float32 ``[18, 512]``, the W+ offset per unit strength for each
            row. For GANSpace it is ``sign * comp_k * std_k`` on every row (the
            offset-mode edit; set mode uses :attr:`ganspace` instead).
        default_rows: sorted row indices edited when the caller gives no rows.
        recommended_range: ``(min, max)`` strengths that give sensible edits.
        kind: ``"linear"`` (w + s·d) or ``"ganspace"`` (see :attr:`ganspace`).
        ganspace: PCA parameters, only for ``kind == "ganspace"``.
        source: file(s) or description of where it came from.
        licence: licence of the data (see the ``LICENCE_*`` constants).
        latent_space: always ``"stylegan2-ffhq-wplus"`` for usable directions.
        note: free-text remark shown to users (e.g. "training bank").
    """

    name: str
    vector: torch.Tensor
    default_rows: tuple[int, ...] = ROW_PRESETS["all"]
    recommended_range: tuple[float, float] = (-5.0, 5.0)
    kind: str = "linear"
    ganspace: GanspaceParams | None = None
    source: str = ""
    licence: str = LICENCE_UNKNOWN
    latent_space: str = WPLUS_SPACE
    note: str = ""

    def __post_init__(self) -> None:
        if tuple(self.vector.shape) != (NUM_ROWS, LATENT_DIM) or self.vector.dtype != torch.float32:
            raise LikenessError(
                f"Direction {self.name!r}: vector must be float32 [18, 512], got {self.vector.dtype} "
                f"{list(self.vector.shape)} (source {self.source or 'unknown'})."
            )
        if self.kind not in ("linear", "ganspace"):
            raise LikenessError(f"Direction {self.name!r}: kind must be 'linear' or 'ganspace', got {self.kind!r}.")
        if (self.kind == "ganspace") != (self.ganspace is not None):
            raise LikenessError(f"Direction {self.name!r}: GANSpace parameters go with kind 'ganspace' only.")
        if not self.default_rows:
            raise LikenessError(f"Direction {self.name!r}: default_rows is empty.")


@dataclass
class DirectionSet:
    """An ordered group of directions that came from one source.

    Attributes:
        name: set name, e.g. ``"encoder4editing/interfacegan"``.
        directions: ``{direction name: Direction}`` in file order.
        files: the file(s) it was read from.
        licence: licence of the set (one line; NON-COMMERCIAL parts say so).
        note: a remark for users (e.g. how the set was assembled).
    """

    name: str
    directions: dict[str, Direction] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    licence: str = LICENCE_UNKNOWN
    note: str = ""

    def __getitem__(self, key: str) -> Direction:
        try:
            return self.directions[key]
        except KeyError:
            raise LikenessError(
                f"Direction {key!r} is not in the set {self.name!r}; it has: {', '.join(self.directions)}."
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self.directions

    def __iter__(self) -> Iterator[str]:
        return iter(self.directions)

    def __len__(self) -> int:
        return len(self.directions)

    def names(self) -> list[str]:
        """Direction names in order."""
        return list(self.directions)


def _parse_row_text(text: str) -> list[int]:
    """Inclusive ranges and single rows; a part outside 0-17 is refused as written (never expanded)."""
    rows: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"range {part!r} runs backwards")
        else:
            lo = hi = int(part)
        if lo < 0 or hi >= NUM_ROWS:
            raise ValueError(f"{part!r} is not a row between 0 and {NUM_ROWS - 1}")
        rows.extend(range(lo, hi + 1))
    return rows


def resolve_rows(rows: RowsSpec, default: Iterable[int] = ROW_PRESETS["all"]) -> tuple[int, ...]:
    """Turn a row selection into sorted, unique row indices in ``[0, 18)``.

    Args:
        rows: ``None`` (use ``default``), a preset name (``"coarse"`` 0-3,
            ``"middle"`` 4-7, ``"fine"`` 8-17, ``"all"``, ``"seeprettyface"``
            0-7), a text list of inclusive ranges (``"0-7"``, ``"0-3,8,10-12"``),
            an int, a ``slice`` over the 18 rows, or an iterable of ints.
        default: rows used for ``None``.

    Raises:
        LikenessError: unknown preset, unparsable text, empty selection or a
            row outside 0-17 (the message quotes the value).
    """
    if rows is None:
        out = list(default)
    elif isinstance(rows, str):
        key = rows.strip().lower()
        if key in ROW_PRESETS:
            out = list(ROW_PRESETS[key])
        else:
            try:
                out = _parse_row_text(key)
            except ValueError as exc:
                raise LikenessError(
                    f"Cannot read the W+ rows {rows!r} ({exc}). Use a preset ({', '.join(ROW_PRESETS)}) "
                    "or inclusive ranges such as '0-7' or '0-3,8,10-12'."
                ) from None
    elif isinstance(rows, slice):
        out = list(range(NUM_ROWS))[rows]
    elif isinstance(rows, int):
        out = [rows]
    else:
        out = [int(r) for r in rows]
    bad = sorted({r for r in out if not 0 <= r < NUM_ROWS})
    if bad:
        shown = ", ".join(str(r) for r in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise LikenessError(f"W+ rows must be between 0 and 17; got {shown} (from {rows!r:.80}).")
    if not out:
        raise LikenessError(f"The W+ row selection {rows!r} is empty; choose at least one row between 0 and 17.")
    return tuple(sorted(set(out)))


def rows_to_str(rows: Iterable[int]) -> str:
    """Inverse of :func:`resolve_rows` for text: ``(0,1,2,3,8)`` -> ``"0-3,8"``; all 18 -> ``"all"``."""
    rs = sorted(set(int(r) for r in rows))
    if tuple(rs) == ROW_PRESETS["all"]:
        return "all"
    parts: list[str] = []
    i = 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        parts.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ",".join(parts)


SHAPES_HELP = (
    "Accepted: a [1,512] or [18,512] / [1,18,512] tensor or .npy array, a GANSpace PCA dict "
    "{mean, comp, std}, a GANSpace configs text file, a list of [1,18,512] tensors, a JSON/dict "
    "{name: [18,512] list}, or a Likeness .safetensors direction file."
)


def as_f32(x: Any) -> torch.Tensor:
    """Any array-like -> a float32 CPU tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    return t.detach().to(device="cpu", dtype=torch.float32)


def to_rows(value: Any, source: str) -> torch.Tensor:
    """A [512] / [1,512] / [18,512] / [1,18,512] array-like -> float32 [18,512]."""
    try:
        t = as_f32(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: not a numeric array ({exc}). {SHAPES_HELP}") from None
    shape = tuple(t.shape)
    if shape in ((LATENT_DIM,), (1, LATENT_DIM)):
        t = t.reshape(1, LATENT_DIM).repeat(NUM_ROWS, 1)
    elif shape in ((NUM_ROWS, LATENT_DIM), (1, NUM_ROWS, LATENT_DIM)):
        t = t.reshape(NUM_ROWS, LATENT_DIM).clone()
    else:
        raise CheckpointError(
            f"{source}: a direction of shape {list(shape)} is not a StyleGAN2 W+ direction "
            f"(expected [1,512], [512], [18,512] or [1,18,512]). {SHAPES_HELP}"
        )
    if not torch.isfinite(t).all():
        raise CheckpointError(f"{source}: the direction contains NaN or infinite values; the file is damaged.")
    return t.contiguous()
