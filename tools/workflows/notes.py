"""The Read me note of a shipped workflow: which model files it needs, where they go, their licences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...models.files.doctor import cli_command
from ...models.files.registry import MODEL_FILES
from .shipped import FILE_LIST_INPUTS, FOLDER_IN_VALUE, SDXL_NODES, shipped_link

__all__ = ["FILE_LIST_INPUTS", "model_note"]


def _model_line(folder: str, value: str) -> str:
    link = shipped_link(folder, value)
    if folder == FOLDER_IN_VALUE:
        folder, value = value.split("/", 1)
    if link is not None:
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
    classes = {node["class_type"] for node in api.values()}
    if "Likeness_FaceAnalyzer" in classes and classes & SDXL_NODES:
        models.append(_model_line("insightface", "models/antelopev2"))
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
        _licence_line(classes),
    ]
    return "\n".join(parts).replace("\n\n\n", "\n\n").strip() + "\n"


def _licence_line(classes: set[str]) -> str:
    parts = []
    if "Likeness_ApplyWPlusAdapter" in classes or not classes & SDXL_NODES:
        parts.append("the W+ adapter weights are NTU S-Lab License 1.0, NON-COMMERCIAL use only")
    if classes & SDXL_NODES:
        parts.append(
            "InstantID's weights are Apache-2.0 (model card) but need insightface antelopev2, whose models are "
            "NON-COMMERCIAL research only; PSTF-AttControl has no published weights (yours carry their own terms)"
        )
    tail = "; check every licence above before any commercial use. Likeness bundles no weights."
    return "Licences: " + "; ".join(parts) + tail
