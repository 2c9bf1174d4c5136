"""Read ComfyUI's ``extra_model_paths.yaml`` without ComfyUI (for ``python -m models.cli doctor --comfyui``)."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["read_extra_model_paths"]

logger = logging.getLogger(__name__)


def read_extra_model_paths(comfyui_dir: Path) -> dict[str, list[Path]]:
    """``{folder key: [paths]}`` from ``<comfyui_dir>/extra_model_paths.yaml``; empty if absent.

    Follows ComfyUI's rules: each section may have ``base_path``; each other
    entry is ``key: path`` or a multi-line block of paths, relative to
    ``base_path`` (or to the YAML file's folder).
    """
    path = Path(comfyui_dir) / "extra_model_paths.yaml"
    if not path.is_file():
        return {}
    import yaml  # ComfyUI depends on PyYAML; only this optional path needs it

    with path.open("r", encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    result: dict[str, list[Path]] = {}
    for section in config.values():
        if not isinstance(section, dict):
            continue
        base = Path(section.get("base_path", path.parent)).expanduser()
        if not base.is_absolute():
            base = path.parent / base
        for key, value in section.items():
            if key in ("base_path", "is_default"):
                continue
            for line in str(value).splitlines():
                line = line.strip()
                if line:
                    result.setdefault(key, []).append(base / Path(line).expanduser())
    return result
