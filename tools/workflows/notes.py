"""The Read me note of a shipped workflow: which model files it needs, where they go, their licences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...models.files.doctor import cli_command
from ...models.files.registry import MODEL_FILES
from .shipped import FILE_LIST_INPUTS, SHIPPED_MODELS

__all__ = ["FILE_LIST_INPUTS", "model_note"]


def _model_line(folder: str, value: str) -> str:
    link = SHIPPED_MODELS.get(value)
    if link is not None and link.directory == folder:
        return f"- models/{folder}/{value}: {link.what}. Download: {link.url} . Licence: {link.licence}."
    if folder == "checkpoints":
        return f"- models/checkpoints/{value}: pick your own checkpoint in the loader. Licence: the checkpoint's."
    if folder == "likeness_directions":
        head = value.split("/", 1)[0] + "/"
        known = next((m for m in MODEL_FILES if m.folder == folder and m.filename == head), None)
        files = (
            "encoder4editing/interfacegan_directions/{age,smile,pose}.pt"
            if value == "encoder4editing/interfacegan"
            else value + "/..."
        )
        text = f"- models/likeness_directions/{files} (direction set '{value}')"
        return text + (f": {known.what}. From {known.source}. Licence: {known.licence}." if known else ".")
    known = next((m for m in MODEL_FILES if m.folder == folder and m.filename == value), None)
    if known is None:
        return f"- models/{folder}/{value}"
    return f"- models/{folder}/{value}: {known.what}. From {known.source}. Licence: {known.licence}."


def model_note(api: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text Note: which model files the workflow needs, where they go, their licences."""
    models: list[str] = []
    images: list[str] = []
    for nid in sorted(api, key=int):
        node = api[nid]
        for name, value in node["inputs"].items():
            folder = FILE_LIST_INPUTS.get((node["class_type"], name))
            if folder == "input":
                images.append(str(value))
            elif folder is not None:
                line = _model_line(folder, str(value))
                if line not in models:
                    models.append(line)
    parts = [
        "MODELS THIS WORKFLOW NEEDS",
        "Put them in ComfyUI/models/ (or a folder listed under the same key in extra_model_paths.yaml), then press R "
        "(refresh) and check the loader nodes.",
        "",
        *models,
        "",
        f"Input photo(s): {', '.join(images)}. Replace them with your own in the Load Image node(s)." if images else "",
        "",
        "No weights yet? " + cli_command("smoke-models --models-dir ../../models") + " writes random-weight "
        "stand-ins for the Likeness files under these names and an SD1.5 checkpoint to pick in the checkpoint "
        "loader(s): the workflow then runs end to end, but every image it makes is noise.",
        cli_command("doctor --comfyui ../..") + " lists what was found where and where to get the rest.",
        "",
        "Licences: the W+ adapter weights are NTU S-Lab License 1.0, NON-COMMERCIAL use only; check every "
        "licence above before any commercial use. Likeness bundles no weights.",
    ]
    return "\n".join(parts).replace("\n\n\n", "\n\n").strip() + "\n"
