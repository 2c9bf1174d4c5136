"""Find every usable direction set under the ``likeness_directions`` folders.

Grouping (recursive, sub-folders allowed):

* single-direction files (``.pt``/``.pth``/``.npy`` tensors) in one folder form
  one set named after the folder; the official layouts get short names:
  e4e ``interfacegan_directions/`` -> ``encoder4editing/interfacegan``,
  w-plus-adapter ``latent_directions/`` -> ``w-plus-adapter/latent_directions``;
* a GANSpace configs file is paired with a PCA in the same folder, else the
  parent folder, else the only face PCA found anywhere in the same search
  folder (logged): ``w-plus-adapter/ganspace``. A PCA not paired in its own or
  the child folder also gives a set with the e4e demo edits
  (``encoder4editing/ganspace``);
* multi-direction files (PreciseControl JSON, training bank, dicts) and
  Likeness ``.safetensors`` files are sets of their own.

Nothing is skipped silently: unreadable, unknown, refused (StyleGAN v1/PGGAN
boundaries, the cars PCA) and too-large files are returned in
:attr:`DirectionCatalog.problems` with the reason, and logged as warnings.

Licences come from the official folder layouts (and the official file names
``all_delta_w_dict.json``, ``att_direction_scale.pth``, ``ganspace_configs.csv``);
anything else is "unknown, check the source" unless a Likeness file says otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import LikenessError
from ..files.checkpoints import load_file
from ..files.registry import walk_files
from .formats import directions_from_object, refusal_reason
from .ganspace import add_files, clean_pca, is_ganspace_pca, load_ganspace_set, sniff_configs
from .types import (
    LICENCE_E4E,
    LICENCE_INTERFACEGAN,
    LICENCE_NVIDIA_NC,
    LICENCE_PRECISECONTROL,
    LICENCE_SLAB,
    LICENCE_UNKNOWN,
    Direction,
    DirectionSet,
)

__all__ = ["DirectionProblem", "DirectionCatalog", "discover_directions", "licence_for", "DIRECTION_EXTENSIONS"]

logger = logging.getLogger(__name__)

DIRECTION_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".sft", ".npy", ".json", ".csv", ".tsv", ".txt")
MAX_DIRECTION_FILE_BYTES = 64 * 1024 * 1024
#: Files that are a set of their own even when they hold one direction.
OWN_SET_SUFFIXES = (".safetensors", ".sft", ".json")


@dataclass(frozen=True)
class DirectionProblem:
    """A file in a directions folder that cannot be used, and why."""

    path: Path
    reason: str


@dataclass
class DirectionCatalog:
    """Result of :func:`discover_directions`.

    Attributes:
        sets: ``{set name: DirectionSet}`` in discovery order.
        problems: unusable files with the reason (also logged as warnings).
    """

    sets: dict[str, DirectionSet] = field(default_factory=dict)
    problems: list[DirectionProblem] = field(default_factory=list)

    def choices(self) -> list[str]:
        """``"set:direction"`` keys of every direction, for a combo box."""
        return [f"{s}:{d}" for s, ds in self.sets.items() for d in ds.directions]

    def get(self, key: str) -> Direction:
        """The direction for a ``"set:direction"`` key from :meth:`choices`."""
        set_name, _, name = key.rpartition(":")
        if set_name not in self.sets:
            raise LikenessError(
                f"No direction set {set_name!r} (from {key!r}); found sets: {', '.join(self.sets) or 'none'}. "
                "Put direction files in models/likeness_directions and refresh."
            )
        return self.sets[set_name][name]


def licence_for(parts: Sequence[str]) -> str:
    """Licence of a file from its path components (official layouts), else unknown."""
    low = [p.lower() for p in parts]
    name = low[-1] if low else ""
    if "latent_directions" in low:
        return LICENCE_NVIDIA_NC
    if "w-plus-adapter" in low or "w_direction" in low or name in ("att_direction_scale.pth", "ganspace_configs.csv"):
        return LICENCE_SLAB
    if "encoder4editing" in low or "interfacegan_directions" in low or "ganspace_pca" in low:
        return LICENCE_E4E
    if "precisecontrol" in low or name == "all_delta_w_dict.json":
        return LICENCE_PRECISECONTROL
    if "interfacegan" in low:
        return LICENCE_INTERFACEGAN
    return LICENCE_UNKNOWN


def set_name(rel: Path, kind: str) -> str:
    """Short set names for the official layouts, else the relative path."""
    parts = [p for p in rel.parts]
    low = [p.lower() for p in parts]
    wpa = "w-plus-adapter" in low or "w_direction" in low
    if kind == "folder" and low and low[-1] == "interfacegan_directions":
        return "w-plus-adapter/interfacegan" if wpa else "encoder4editing/interfacegan"
    if kind == "folder" and low and low[-1] == "latent_directions":
        return "w-plus-adapter/latent_directions"
    if kind == "configs" and wpa:
        return "w-plus-adapter/ganspace"
    if kind == "pca" and "ganspace_pca" in low or (kind == "pca" and rel.stem.lower() == "ffhq_pca" and not wpa):
        return "encoder4editing/ganspace"
    if kind == "file" and rel.name.lower() == "att_direction_scale.pth":
        return "w-plus-adapter/training_bank"
    if kind == "file" and rel.name.lower() == "all_delta_w_dict.json":
        return "PreciseControl"
    text = rel.as_posix()
    return text if kind == "folder" else text.rsplit(".", 1)[0]


def _files_under(base: Path) -> list[Path]:
    return [p for p in walk_files(base) if p.suffix.lower() in DIRECTION_EXTENSIONS]


def _add(catalog: DirectionCatalog, ds: DirectionSet) -> None:
    name, n = ds.name, 2
    while name in catalog.sets:
        name, n = f"{ds.name} ({n})", n + 1
    ds.name = name
    catalog.sets[name] = ds


def _version(path: Path) -> tuple:
    """``(path, mtime_ns, size)``, or the path alone when it cannot be read (a broken link)."""
    try:
        st = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), st.st_mtime_ns, st.st_size)


_logged: set[tuple] = set()
_logged_lock = threading.Lock()


def _warn_once(path: Path, text: str) -> None:
    """Log a warning about a file once per file version (a rescan of the same file stays quiet)."""
    key = (*_version(path), text)
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.warning("Likeness directions: %s", text)


def _problem(catalog: DirectionCatalog, path: Path, reason: str) -> None:
    """Record an unusable file (and warn once per file version)."""
    catalog.problems.append(DirectionProblem(path, reason))
    _warn_once(path, "unusable file: " + (reason if str(path) in reason else f"{path}: {reason}"))


def _read_files(base: Path, catalog: DirectionCatalog) -> tuple[dict, dict, dict]:
    """Read every file below ``base``: multi-direction files become sets at once; returns
    ``(single-direction files per folder, GANSpace PCAs, GANSpace configs)`` for grouping."""
    singles: dict[Path, list[tuple[Path, DirectionSet]]] = {}
    pcas: dict[Path, Any] = {}
    configs: dict[Path, list] = {}
    for path in _files_under(base):
        rel = path.relative_to(base)
        reason = refusal_reason(path) or _size_problem(path)
        if reason:
            _problem(catalog, path, reason)
            continue
        parsed = sniff_configs(path)
        if parsed is not None:
            configs[path] = parsed
            continue
        try:
            obj = load_file(path)
            if is_ganspace_pca(obj):
                pcas[path] = clean_pca(obj, path)
                continue
            ds = directions_from_object(obj, path, licence=licence_for(rel.parts))
        except LikenessError as exc:
            _problem(catalog, path, str(exc))
            continue
        if len(ds) == 1 and path.suffix.lower() not in OWN_SET_SUFFIXES:
            singles.setdefault(path.parent, []).append((path, ds))
        else:
            ds.name = set_name(rel, "file")
            _add(catalog, ds)
    return singles, pcas, configs


def _size_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size > MAX_DIRECTION_FILE_BYTES:
        return f"{size:,} bytes is too large for a direction file (a model checkpoint?)"
    return None


def _add_folder_sets(base: Path, singles: dict, catalog: DirectionCatalog) -> None:
    """One set per folder of single-direction files, named after the folder."""
    for folder, items in singles.items():
        rel = folder.relative_to(base)
        dirs = {}
        for path, ds in items:
            for name, d in ds.directions.items():
                if name in dirs:  # e.g. age.pt next to age.npy: keep both, say which is which
                    name = f"{name} ({path.suffix.lstrip('.')})"
                    _warn_once(path, f"two files named {d.name!r} in {folder}; calling {path.name} {name!r}")
                    d = replace(d, name=name)
                dirs[name] = d
        name = set_name(rel, "folder") if rel.parts else base.name
        licence = licence_for(rel.parts + ("x",))
        _add(catalog, DirectionSet(name, dirs, tuple(p for p, _ in items), licence))


def _pca_for(cpath: Path, face_pcas: list[Path]) -> tuple[list[Path], str]:
    """PCAs a configs file may pair with (same folder, else parent, else the only one) and how."""
    near = [p for p in face_pcas if p.parent == cpath.parent] or [
        p for p in face_pcas if p.parent == cpath.parent.parent
    ]
    if not near and len(face_pcas) == 1:
        return face_pcas, "the only GANSpace PCA in this directions folder"
    return near, "same or parent folder"


def _add_configs_sets(base: Path, configs: dict, pcas: dict, catalog: DirectionCatalog) -> set[Path]:
    """One GANSpace set per configs file; returns the PCAs paired in their own or the parent folder."""
    used: set[Path] = set()
    for cpath, parsed in configs.items():
        rel = cpath.relative_to(base)
        near, how = _pca_for(cpath, list(pcas))
        if not near:
            _problem(
                catalog, cpath,
                "GANSpace configs without a matching PCA: put ffhq_pca.pt (encoder4editing/editings/ganspace_pca) "
                "in the same folder" + (f"; found {len(pcas)} PCAs, which is ambiguous" if pcas else ""),
            )  # fmt: skip
            continue
        pca_path = near[0]
        if pca_path.parent in (cpath.parent, cpath.parent.parent):
            used.add(pca_path)
        logger.info("Likeness directions: GANSpace configs %s use PCA %s (%s)", cpath, pca_path, how)
        lic_c, lic_p = licence_for(rel.parts), licence_for(pca_path.relative_to(base).parts)
        licence = lic_c if lic_c == lic_p else f"configs: {lic_c}; PCA: {lic_p}"
        try:
            ds = load_ganspace_set(pcas[pca_path], parsed, name=set_name(rel, "configs"), licence=licence)
        except LikenessError as exc:
            _problem(catalog, cpath, str(exc))
            continue
        ds.note = f"configs {cpath.name} + PCA {pca_path.name} ({how})"
        _add(catalog, add_files(ds, (pca_path, cpath)))
    return used


def _scan_root(base: Path, catalog: DirectionCatalog) -> None:
    singles, pcas, configs = _read_files(base, catalog)
    _add_folder_sets(base, singles, catalog)
    used = _add_configs_sets(base, configs, pcas, catalog)
    for pca_path, pca in pcas.items():
        if pca_path in used:
            continue
        rel = pca_path.relative_to(base)
        ds = load_ganspace_set(pca, None, name=set_name(rel, "pca"), licence=licence_for(rel.parts))
        _add(catalog, add_files(ds, (pca_path,)))


def discover_directions(search_paths: Sequence[str | Path] | Mapping[str, Sequence[str | Path]]) -> DirectionCatalog:
    """Scan the directions folders recursively and group files into sets.

    Args:
        search_paths: the ``likeness_directions`` folders, or a registry-style
            ``{folder key: [folders]}`` mapping (its ``likeness_directions`` entry is used).

    Returns:
        A :class:`DirectionCatalog`; missing folders are ignored (logged at debug level).
    """
    if isinstance(search_paths, Mapping):
        search_paths = search_paths.get("likeness_directions", ())
    catalog = DirectionCatalog()
    for base in search_paths:
        base = Path(base)
        if not base.is_dir():
            logger.debug("Likeness directions: %s does not exist", base)
            continue
        _scan_root(base, catalog)
    logger.info(
        "Likeness directions: %d sets, %d directions, %d unusable files",
        len(catalog.sets), sum(len(s) for s in catalog.sets.values()), len(catalog.problems),
    )  # fmt: skip
    return catalog
