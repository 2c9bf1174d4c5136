"""Register Likeness model folders with ComfyUI's ``folder_paths`` and read them back."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths

from ..models.files.registry import FOLDERS, file_problem

__all__ = ["register_model_folders", "search_paths", "file_list", "file_choices", "validate_file", "NO_FILE"]

logger = logging.getLogger(__name__)


def register_model_folders() -> None:
    """Add ``models/<key>`` for every Likeness folder key.

    Entries users already added in ``extra_model_paths.yaml`` (applied before
    custom nodes load) are kept and stay first; the default folder is appended
    if missing; the extension set is made explicit (a yaml-created key has an
    empty set, which would accept every file).
    """
    for key, folder in FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, key)
        paths, exts = folder_paths.folder_names_and_paths.get(key, ([], set()))
        paths = list(paths)
        if default not in paths:
            paths.append(default)
        if key == "likeness_wplus":  # Save W+ writes into the output folder
            saved = os.path.join(folder_paths.get_output_directory(), key)
            if saved not in paths:
                paths.append(saved)
        folder_paths.folder_names_and_paths[key] = (paths, set(exts) | set(folder.extensions))
        logger.debug("Likeness: model folder %r -> %s", key, paths)


def search_paths() -> dict[str, list[Path]]:
    """``{folder key: [paths]}`` as ComfyUI currently resolves them."""
    return {key: [Path(p) for p in folder_paths.get_folder_paths(key)] for key in FOLDERS}


def file_list(key: str) -> list[str]:
    """File names ComfyUI lists for a folder key (for combo inputs)."""
    return list(folder_paths.get_filename_list(key))


# What a file combo shows when its folder is empty: choosing it fails validation with this message, before the run.
NO_FILE: dict[str, str] = {
    "e4e": "no e4e file: run Likeness Doctor",
    "wplus": "no W+ adapter file: run Likeness Doctor",
    "likeness_wplus": "no saved W+ file: run Save W+ first",
}


def file_choices(key: str) -> list[str]:
    """Combo options: the files that exist, or the one clear "no ... file" entry."""
    return file_list(key) or [NO_FILE[key]]


def validate_file(key: str, name: str) -> bool | str:
    """``True`` when ``name`` is a file of the folder key, else the message ComfyUI shows before the run."""
    files = file_list(key)
    paths = search_paths()[key]
    if name in files and any((base / name).is_file() for base in paths):
        return True
    problems = "; ".join(p for p in (file_problem(base / name) for base in paths) if p)
    if problems:  # a folder or a broken link of that name
        return f"{name!r} is not a usable file: {problems}. Remove it, or replace it with the file."
    where = ", ".join(str(p) for p in paths)
    if not files:
        return f"{NO_FILE[key]} (the '{key}' folders are empty: {where})."
    return f"{name!r} is not in the '{key}' folders ({where}); found: {', '.join(files[:10])}. Run Likeness Doctor."
