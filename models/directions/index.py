"""Direction sets without reading files twice: a catalogue cached by folder mtimes, and cheap set names.

:func:`.discovery.discover_directions` opens every file (``torch.load`` of each direction), too
slow for a node schema that ComfyUI asks for on every ``/object_info`` and prompt validation.

* :func:`cached_catalog` runs the discovery once per state of the folders: the key is the
  ``(path, mtime, size)`` of every direction file and sub-folder (``os.stat`` only), so adding,
  removing or replacing a file rescans, and nothing else does.
* :func:`set_names` lists set names without opening any file: the cached catalogue's names while
  it is current, else the names the folder layout predicts (:func:`layout_set_names`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..files.registry import walk_folders
from .discovery import (
    DIRECTION_EXTENSIONS,
    MAX_DIRECTION_FILE_BYTES,
    OWN_SET_SUFFIXES,
    DirectionCatalog,
    discover_directions,
    set_name,
)
from .formats import refusal_reason
from .ganspace import pca_refusal

__all__ = ["folder_signature", "cached_catalog", "set_names", "layout_set_names", "clear_cache"]

logger = logging.getLogger(__name__)

_CONFIG_SUFFIXES = (".csv", ".tsv", ".txt")
_BANK_NAME = "att_direction_scale.pth"
_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[tuple, DirectionCatalog]] = {}


def _entries(base: Path) -> list[tuple[Path, os.stat_result]]:
    """Direction files and folders below ``base`` with their stat results, following symlinks once."""
    found: list[tuple[Path, os.stat_result]] = []
    for root, files in walk_folders(base):
        found.append((root, root.stat()))
        for name in files:
            if Path(name).suffix.lower() in DIRECTION_EXTENSIONS:
                path = root / name
                try:
                    found.append((path, path.stat()))
                except OSError:  # a dangling link: discovery reports it
                    continue
    return found


def folder_signature(folders: Sequence[str | Path]) -> tuple:
    """``(path, mtime_ns, size)`` of every direction file and sub-folder: changes with any edit."""
    sig = []
    for base in folders:
        base = Path(base)
        if base.is_dir():
            sig.extend((str(p), st.st_mtime_ns, st.st_size) for p, st in _entries(base))
    return tuple(sig)


def cached_catalog(folders: Sequence[str | Path]) -> DirectionCatalog:
    """:func:`discover_directions` of ``folders``, recomputed only when :func:`folder_signature` changes."""
    key = tuple(str(f) for f in folders)
    sig = folder_signature(folders)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
    catalog = discover_directions(list(folders))
    with _lock:
        _cache[key] = (sig, catalog)
    return catalog


def clear_cache() -> None:
    """Forget every cached catalogue (tests)."""
    with _lock:
        _cache.clear()


def set_names(folders: Sequence[str | Path]) -> list[str]:
    """Set names for a combo box, without opening any file (see the module docstring)."""
    key = tuple(str(f) for f in folders)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == folder_signature(folders):
        return list(hit[1].sets)
    return layout_set_names(folders)


def layout_set_names(folders: Sequence[str | Path]) -> list[str]:
    """The set names discovery will give, predicted from paths alone.

    Exact for the official layouts and for folders of single-direction files; a file whose
    content decides otherwise (a PCA without ``pca`` in its name, a multi-direction ``.pt``)
    gets its real name once the catalogue has been read (:func:`cached_catalog`).
    """
    names: list[str] = []
    for base in folders:
        base = Path(base)
        if base.is_dir():
            for name in _layout_names(base):
                unique, n = name, 2
                while unique in names:
                    unique, n = f"{name} ({n})", n + 1
                names.append(unique)
    return names


def _layout_names(base: Path) -> list[str]:
    files = [
        (p, st)
        for p, st in _entries(base)
        if p.is_file() and not refusal_reason(p) and st.st_size <= MAX_DIRECTION_FILE_BYTES
    ]
    own, folders, configs, pcas = [], [], [], []
    for path, _ in files:
        rel = path.relative_to(base)
        suffix, low = path.suffix.lower(), path.name.lower()
        if suffix in _CONFIG_SUFFIXES:
            configs.append(rel)
        elif suffix in OWN_SET_SUFFIXES or low == _BANK_NAME:
            own.append(set_name(rel, "file"))
        elif "pca" in path.stem.lower():
            if not pca_refusal(path):
                pcas.append(rel)
        elif rel.parent not in folders:
            folders.append(rel.parent)
    names = own + [set_name(f, "folder") if f.parts else base.name for f in folders]
    names += [set_name(c, "configs") for c in configs]
    paired = {c.parent for c in configs} | {c.parent.parent for c in configs}
    names += [set_name(p, "pca") for p in pcas if p.parent not in paired]
    return names
