"""The ``doctor`` report: which model files were found where, and how to get the rest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .registry import FOLDERS, MODEL_FILES, ModelFile, list_files

__all__ = ["FileStatus", "check_models", "format_report", "CLI", "cli_command"]

#: The one documented command form of the Likeness command line.
CLI = "python -m models.cli"


def cli_command(arguments: str) -> str:
    """``python -m models.cli <arguments>`` and where to run it, for messages and notes."""
    return f"`{CLI} {arguments}` (run it in the Likeness folder, ComfyUI/custom_nodes/comfyui-likeness)"


@dataclass(frozen=True)
class FileStatus:
    """One known model file and where (if anywhere) it was found."""

    spec: ModelFile
    found_at: Path | None


def _locate(spec: ModelFile, bases: Sequence[Path]) -> Path | None:
    for base in bases:
        candidate = Path(base) / spec.filename
        if spec.directory:
            if candidate.is_dir() and any(candidate.iterdir()):
                return candidate
        elif candidate.is_file():
            return candidate
    return None


def check_models(search_paths: Mapping[str, Sequence[Path]]) -> list[FileStatus]:
    """Status of every known model file, in catalogue order."""
    return [FileStatus(spec, _locate(spec, search_paths.get(spec.folder, ()))) for spec in MODEL_FILES]


def format_report(search_paths: Mapping[str, Sequence[Path]]) -> str:
    """Human-readable report: folders searched, each known file found or missing, other files present."""
    statuses = check_models(search_paths)
    lines: list[str] = ["Likeness doctor", "=" * 15]
    for key, folder in FOLDERS.items():
        bases = [Path(b) for b in search_paths.get(key, ())]
        lines.append("")
        lines.append(f"[{key}] {folder.purpose}")
        for base in bases:
            lines.append(f"  searched: {base}{'' if base.is_dir() else '  (does not exist)'}")
        known_names = set()
        for st in statuses:
            if st.spec.folder != key:
                continue
            known_names.add(st.spec.filename)
            tag = "optional" if not st.spec.required else "required"
            if st.found_at is not None:
                lines.append(f"  FOUND    {st.spec.filename}  ->  {st.found_at}")
            else:
                lines.append(f"  MISSING  {st.spec.filename}  ({tag}; {st.spec.what})")
                lines.append(f"           folder:  {bases[0] if bases else key}")
                lines.append(f"           get it:  {st.spec.source}")
            lines.append(f"           licence: {st.spec.licence}")
            lines.append(f"           used by: {st.spec.needed_for}")
        others = [n for n in list_files(key, search_paths) if not any(n.startswith(k.rstrip("/")) for k in known_names)]
        for name in others:
            lines.append(f"  other    {name}")
    missing_required = [st for st in statuses if st.found_at is None and st.spec.required]
    lines.append("")
    if missing_required:
        lines.append(
            f"{len(missing_required)} required file(s) missing: "
            + ", ".join(f"{st.spec.folder}/{st.spec.filename}" for st in missing_required)
        )
        lines.append(
            "Without them Likeness can still run on smoke models (random weights, every image is noise): "
            + cli_command("smoke-models --models-dir ../../models")
            + "."
        )
    else:
        lines.append("All required files found.")
    return "\n".join(lines)
