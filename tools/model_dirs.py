"""Where the command-line tools look for model files (shared by every verb)."""

from __future__ import annotations

import os
from pathlib import Path

from ..models.files.extra_paths import read_extra_model_paths
from ..models.files.registry import folder_paths_under

__all__ = ["default_models_dir", "search_paths"]


def default_models_dir() -> Path:
    """``$COMFYUI_PATH/models`` when set, else ``./models_store``."""
    comfy = os.environ.get("COMFYUI_PATH")
    return Path(comfy) / "models" if comfy else Path("models_store")


def search_paths(models_dir: Path, comfyui: Path | None) -> dict[str, list[Path]]:
    """Model folder key -> folders under ``models_dir``, plus a ComfyUI's ``extra_model_paths.yaml`` entries."""
    paths = folder_paths_under(models_dir)
    if comfyui is not None:
        for key, extra in read_extra_model_paths(comfyui).items():
            if key in paths:
                paths[key] = paths[key] + [p for p in extra if p not in paths[key]]
    return paths
