"""GANSpace directions: the PCA file, the configs table and one direction per config line.

A GANSpace PCA (``ffhq_pca.pt``) is a dict ``{mean [1,512], comp [K,1,512], std [K]}``; a configs
file (``ganspace_configs.csv``) has lines ``name pca_idx start end [strength]``. Without a configs
file the named edits of the e4e inference demo are used (:data:`E4E_DEMO_GANSPACE_CONFIGS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, LikenessError
from ..files.checkpoints import load_file
from .types import LATENT_DIM, LICENCE_UNKNOWN, NUM_ROWS, Direction, DirectionSet, GanspaceParams, as_f32

__all__ = [
    "GanspaceConfig",
    "E4E_DEMO_GANSPACE_CONFIGS",
    "is_ganspace_pca",
    "pca_refusal",
    "clean_pca",
    "sniff_configs",
    "load_ganspace_configs",
    "load_ganspace_set",
    "add_files",
]

_CARS = re.compile(r"car", re.IGNORECASE)

GanspaceConfig = tuple[str, int, int, int, "float | None"]

# The named GANSpace edits of e4e's inference demo: name -> (pca_idx, start, end, strength).
E4E_DEMO_GANSPACE_CONFIGS: dict[str, tuple[int, int, int, float]] = {
    "eye_openness": (54, 7, 8, 20.0),
    "smile": (46, 4, 5, -20.0),
    "trimmed_beard": (58, 7, 9, 20.0),
    "white_hair": (57, 7, 10, -24.0),
    "lipstick": (34, 10, 11, 20.0),
}


def pca_refusal(path: Path) -> str | None:
    """Why a GANSpace PCA is refused by its file name (the cars PCA), or None."""
    if _CARS.search(path.stem):
        return (
            f"{path}: this GANSpace PCA is for the StyleGAN2 *cars* generator (file name {path.name!r}), "
            "not for faces; it would produce meaningless edits of face W+ codes. Use ffhq_pca.pt."
        )
    return None


def is_ganspace_pca(obj: Any) -> bool:
    """True for a dict with tensors ``mean`` [1,512], ``comp`` [K,1,512], ``std`` [K]."""
    if not isinstance(obj, Mapping) or not all(isinstance(obj.get(k), torch.Tensor) for k in ("mean", "comp", "std")):
        return False
    mean, comp, std = obj["mean"], obj["comp"], obj["std"]
    return (
        mean.numel() == LATENT_DIM
        and comp.ndim == 3
        and tuple(comp.shape[1:]) == (1, LATENT_DIM)
        and std.ndim == 1
        and std.shape[0] == comp.shape[0]
    )


def sniff_configs(path: Path) -> list[GanspaceConfig] | None:
    """Parse ``path`` as GANSpace configs text if it is one (None otherwise; no error)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(1_000_001)
        if len(raw) > 1_000_000 or b"\x00" in raw:
            return None
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if text.lstrip()[:1] in ("{", "["):
        return None
    try:
        return _parse_configs(text, path)
    except CheckpointError:
        return None


def _parse_configs(text: str, path: Path) -> list[GanspaceConfig]:
    rows: list[GanspaceConfig] = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            if len(fields) not in (4, 5):
                raise ValueError(f"{len(fields)} fields")
            idx, start, end = int(fields[1]), int(fields[2]), int(fields[3])
            strength = float(fields[4]) if len(fields) == 5 else None
        except ValueError as exc:
            if not rows and n == 1 or (not rows and all(not f.lstrip("-").isdigit() for f in fields[1:])):
                continue  # a header line
            raise CheckpointError(
                f"{path}, line {n}: {line.strip()!r} is not a GANSpace config ({exc}); expected "
                "'name pca_idx start end [strength]' separated by tabs or spaces."
            ) from None
        if not 0 <= start < end <= NUM_ROWS:
            raise CheckpointError(f"{path}, line {n}: rows [{start}, {end}) must satisfy 0 <= start < end <= 18.")
        rows.append((fields[0], idx, start, end, strength))
    if not rows:
        raise CheckpointError(f"{path} holds no GANSpace config lines ('name pca_idx start end [strength]').")
    return rows


def load_ganspace_configs(path: str | Path) -> list[GanspaceConfig]:
    """Read a ``ganspace_configs.csv``-style file: ``(name, pca_idx, start, end, strength|None)`` per line.

    Whitespace/tab/comma separated, CRLF or LF, optional header line, ``#`` comments.

    Raises:
        CheckpointError: naming the file and the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise LikenessError(f"{path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a text file, so not a GANSpace configs file.") from None
    return _parse_configs(text, path)


def _ganspace_direction(
    name: str, pca: Mapping[str, torch.Tensor], cfg: tuple[int, int, int, float | None], source: str, licence: str
) -> Direction:
    idx, start, end, strength = cfg
    k = int(pca["std"].shape[0])
    if not 0 <= idx < k:
        raise CheckpointError(f"{source}: config {name!r} uses PCA component {idx}, but the PCA has {k} (0-{k - 1}).")
    params = GanspaceParams(pca=pca, pca_idx=idx, start=start, end=end, config_strength=strength)
    vec = (params.sign * pca["comp"][idx].reshape(LATENT_DIM) * pca["std"][idx]).repeat(NUM_ROWS, 1)
    lim = abs(strength) if strength else 20.0
    return Direction(
        name=name,
        vector=vec.contiguous(),
        default_rows=tuple(range(start, end)),
        recommended_range=(-lim, lim),
        kind="ganspace",
        ganspace=params,
        source=source,
        licence=licence,
    )


def clean_pca(obj: Mapping[str, Any], source: Path) -> dict[str, torch.Tensor]:
    """Validated float32 copy of a GANSpace PCA dict; refuses the cars PCA by name."""
    reason = pca_refusal(source)
    if reason:
        raise CheckpointError(reason)
    pca = {k: as_f32(obj[k]) for k in ("mean", "comp", "std")}
    pca["mean"] = pca["mean"].reshape(1, LATENT_DIM)
    if not all(torch.isfinite(v).all() for v in pca.values()) or not (pca["std"] > 0).all():
        raise CheckpointError(f"{source}: the GANSpace PCA has NaN/infinite values or non-positive std; damaged file.")
    return pca


def load_ganspace_set(
    pca: str | Path | Mapping[str, torch.Tensor],
    configs: str | Path | Sequence[GanspaceConfig] | None = None,
    *,
    name: str | None = None,
    licence: str = LICENCE_UNKNOWN,
) -> DirectionSet:
    """One named GANSpace Direction per config line (or the e4e demo configs when ``configs`` is None).

    Args:
        pca: PCA file or the loaded ``{mean, comp, std}`` dict.
        configs: configs file, parsed configs, or None.
        name: set name (default: derived from the files).
        licence: licence of the set.
    """
    files: list[Path] = []
    if isinstance(pca, (str, Path)):
        pca_path = Path(pca)
        obj = load_file(pca_path)
        if not is_ganspace_pca(obj):
            raise CheckpointError(
                f"{pca_path} is not a GANSpace PCA (expected dict mean [1,512], comp [K,1,512], std [K])."
            )
        pca_t = clean_pca(obj, pca_path)
        files.append(pca_path)
    else:
        if not is_ganspace_pca(pca):
            raise LikenessError("pca must be a dict with mean [1,512], comp [K,1,512], std [K].")
        pca_t = {k: as_f32(pca[k]) for k in ("mean", "comp", "std")}
    if configs is None:
        cfgs = [(n, *c) for n, c in E4E_DEMO_GANSPACE_CONFIGS.items()]
        note = "named edits from the e4e inference demo"
    elif isinstance(configs, (str, Path)):
        cfgs = load_ganspace_configs(configs)
        files.append(Path(configs))
        note = f"configs from {Path(configs).name}"
    else:
        cfgs = list(configs)
        note = "configs given in code"
    source = " + ".join(str(f) for f in files) or "in-memory PCA"
    dirs = {c[0]: _ganspace_direction(c[0], pca_t, (c[1], c[2], c[3], c[4]), source, licence) for c in cfgs}
    return DirectionSet(
        name=name or (files[-1].stem if files else "ganspace"),
        directions=dirs,
        files=tuple(files),
        licence=licence,
        note=note,
    )


def add_files(ds: DirectionSet, files: tuple[Path, ...]) -> DirectionSet:
    """Record ``files`` (first) as the sources of ``ds``; returns ``ds``."""
    ds.files = tuple(dict.fromkeys(files + ds.files))
    return ds
