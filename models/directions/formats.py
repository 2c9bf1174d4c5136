"""Readers for every published W+ direction format, and Likeness' own direction file.

Formats are recognised by **content** (via :func:`.checkpoints.load_file`):

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

**Likeness direction file** (``.safetensors``, written by :func:`save_direction`):

* tensor ``direction``: float32 ``[18, 512]`` (or ``[1, 512]``, broadcast to all
  rows), the W+ offset per unit strength;
* for GANSpace also ``mean`` [1,512], ``comp`` [K,1,512], ``std`` [K] (the PCA);
* metadata (all strings): ``format`` = ``"likeness-direction"``,
  ``format_version`` = ``"1"``, ``name``, ``latent_space`` =
  ``"stylegan2-ffhq-wplus"`` (anything else is refused), ``rows`` (``"all"``,
  ``"0-7"``, ``"0-3,8"``), ``kind`` (``"linear"`` | ``"ganspace"``),
  ``recommended_min``, ``recommended_max``, ``source``, ``licence``, ``note``,
  and for GANSpace ``pca_idx``, ``start``, ``end``, ``config_strength``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, LikenessError
from ..files.checkpoints import load_file
from .types import (
    LATENT_DIM,
    LICENCE_UNKNOWN,
    NUM_ROWS,
    ROW_PRESETS,
    WPLUS_SPACE,
    Direction,
    DirectionSet,
    GanspaceParams,
    resolve_rows,
    rows_to_str,
)

__all__ = [
    "FORMAT_TAG",
    "E4E_DEMO_GANSPACE_CONFIGS",
    "TRAINING_BANK_NAMES",
    "GanspaceConfig",
    "refusal_reason",
    "load_directions",
    "load_ganspace_configs",
    "load_ganspace_set",
    "directions_from_object",
    "save_direction",
    "is_ganspace_pca",
    "clean_pca",
    "add_files",
    "sniff_configs",
]

logger = logging.getLogger(__name__)

FORMAT_TAG = "likeness-direction"

GanspaceConfig = tuple[str, int, int, int, "float | None"]

# e4e inference demo (methods.md §2.3, [inferred]): name -> (pca_idx, start, end, strength).
E4E_DEMO_GANSPACE_CONFIGS: dict[str, tuple[int, int, int, float]] = {
    "eye_openness": (54, 7, 8, 20.0),
    "smile": (46, 4, 5, -20.0),
    "trimmed_beard": (58, 7, 9, 20.0),
    "white_hair": (57, 7, 10, -24.0),
    "lipstick": (34, 10, 11, 20.0),
}

# att_direction_scale.pth, identified by cosine 1.0 (methods.md §2.4). Entries 3.. are seeprettyface vectors.
TRAINING_BANK_NAMES: tuple[str, ...] = (
    "e4e_age", "e4e_pose", "e4e_smile", "age", "emotion_angry", "emotion_disgust", "emotion_fear",
    "emotion_sad", "emotion_happy", "emotion_surprise", "gender", "glasses", "width", "race_white",
    "angle_pitch", "emotion_angry_2", "eyes_open",
)  # fmt: skip

_GENFORCE = re.compile(r"^(pggan|stylegan)_.*_boundary\.npy$", re.IGNORECASE)
_CARS = re.compile(r"car", re.IGNORECASE)
_SHAPES_HELP = (
    "Accepted: a [1,512] or [18,512] / [1,18,512] tensor or .npy array, a GANSpace PCA dict "
    "{mean, comp, std}, a GANSpace configs text file, a list of [1,18,512] tensors, a JSON/dict "
    "{name: [18,512] list}, or a Likeness .safetensors direction file."
)


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


def _pca_refusal(path: Path) -> str | None:
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


def _f32(x: Any) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    return t.detach().to(device="cpu", dtype=torch.float32)


def _to_rows(value: Any, source: str) -> torch.Tensor:
    """A [512] / [1,512] / [18,512] / [1,18,512] array-like -> float32 [18,512]."""
    try:
        t = _f32(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: not a numeric array ({exc}). {_SHAPES_HELP}") from None
    shape = tuple(t.shape)
    if shape in ((LATENT_DIM,), (1, LATENT_DIM)):
        t = t.reshape(1, LATENT_DIM).repeat(NUM_ROWS, 1)
    elif shape in ((NUM_ROWS, LATENT_DIM), (1, NUM_ROWS, LATENT_DIM)):
        t = t.reshape(NUM_ROWS, LATENT_DIM).clone()
    else:
        raise CheckpointError(
            f"{source}: a direction of shape {list(shape)} is not a StyleGAN2 W+ direction "
            f"(expected [1,512], [512], [18,512] or [1,18,512]). {_SHAPES_HELP}"
        )
    if not torch.isfinite(t).all():
        raise CheckpointError(f"{source}: the direction contains NaN or infinite values; the file is damaged.")
    return t.contiguous()


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
    reason = _pca_refusal(source)
    if reason:
        raise CheckpointError(reason)
    pca = {k: _f32(obj[k]) for k in ("mean", "comp", "std")}
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
        pca_t = {k: _f32(pca[k]) for k in ("mean", "comp", "std")}
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


def _own_format(path: Path, tensors: Mapping[str, torch.Tensor], licence_hint: str) -> DirectionSet:
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
        vector=_to_rows(tensors["direction"], src),
        default_rows=rows,
        recommended_range=(rmin, rmax),
        kind=kind,
        ganspace=params,
        source=meta.get("source") or src,
        licence=meta.get("licence") or licence_hint,
        note=meta.get("note", ""),
    )
    return DirectionSet(name=name, directions={name: d}, files=(path,), licence=d.licence)


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
        return _own_format(path, obj, licence)
    if is_ganspace_pca(obj):
        return add_files(load_ganspace_set(clean_pca(obj, path), configs, name=stem, licence=licence), (path,))
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        is_spf = tuple(obj.shape) == (NUM_ROWS, LATENT_DIM)
        d = Direction(
            name=stem,
            vector=_to_rows(obj, src),
            default_rows=ROW_PRESETS["seeprettyface"] if is_spf else ROW_PRESETS["all"],
            recommended_range=(-4.0, 4.0) if is_spf else (-5.0, 5.0),
            source=src,
            licence=licence,
        )
        return DirectionSet(name=stem, directions={stem: d}, files=(path,), licence=licence)
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        d = Direction(name=stem, vector=_to_rows(obj, src), source=src, licence=licence)
        return DirectionSet(name=stem, directions={stem: d}, files=(path,), licence=licence)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        known = len(obj) == len(TRAINING_BANK_NAMES)
        dirs = {}
        for i, t in enumerate(obj):
            nm = TRAINING_BANK_NAMES[i] if known else f"bank_{i}"
            spf = known and i >= 3
            dirs[nm] = Direction(
                name=nm,
                vector=_to_rows(t, f"{src} [entry {i}]"),
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
                    f"{path}: entry {k!r} is a {type(v).__name__}, not a direction array. {_SHAPES_HELP}"
                )
            dirs[k] = Direction(
                name=k, vector=_to_rows(v, f"{src} [{k!r}]"), recommended_range=(-3.0, 3.0), source=f"{src} [{k!r}]",
                licence=licence,
            )  # fmt: skip
        return DirectionSet(name=stem, directions=dirs, files=(path,), licence=licence)
    what = type(obj).__name__
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        what = f"{what} {getattr(obj, 'dtype', '')} {list(obj.shape)}"
    elif isinstance(obj, Mapping):
        what = f"dict with keys {list(obj)[:8]}"
    raise CheckpointError(f"{path} is not a direction file: it holds a {what}. {_SHAPES_HELP}")


def add_files(ds: DirectionSet, files: tuple[Path, ...]) -> DirectionSet:
    """Record ``files`` (first) as the sources of ``ds``; returns ``ds``."""
    ds.files = tuple(dict.fromkeys(files + ds.files))
    return ds


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
