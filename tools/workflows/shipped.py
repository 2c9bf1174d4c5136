"""The shipped workflows: where they live, their titles, and the model files they name.

ComfyUI lists the first-level ``example_workflows/*.json`` of a pack as its templates (the template browser shows
the file name as the title and ``<name>.jpg`` beside it as the thumbnail). The API twins live in
``example_workflows/api/<stem>.json`` (not listed as templates) and are what scripts, the batch queue and the
tests run. Shipped workflows name the model files users download (with ComfyUI's ``properties.models`` metadata
where the file has a public URL, so the frontend's "Missing Models" dialog links the download); the tests
substitute the smoke models with :func:`smoke_prompt`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FILE_LIST_INPUTS",
    "WORKFLOW_DIR",
    "TITLES",
    "ModelLink",
    "SHIPPED_MODELS",
    "SMOKE_NAMES",
    "ui_path",
    "api_path",
    "model_metadata",
    "smoke_prompt",
]

# Combos whose options are files on the user's machine: (class_type, input) -> folder.
FILE_LIST_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoadImage", "image"): "input",
    ("Likeness_LoadE4E", "e4e_name"): "e4e",
    ("Likeness_LoadWPlusAdapter", "adapter_name"): "wplus",
    ("Likeness_LoadDirections", "direction_set"): "likeness_directions",
    ("Likeness_LoadWPlus", "wplus_name"): "likeness_wplus",
}
WORKFLOW_DIR = "example_workflows"
# API stem -> template title (the UI file's name: the template browser shows it as it is).
TITLES: dict[str, str] = {
    "likeness_portrait": "Likeness portrait with edited attributes",
    "likeness_attribute_sweep": "Likeness attribute sweep",
    "likeness_identity_mix": "Likeness identity mix",
    "likeness_face_refine": "Likeness face refine in a scene",
}

_WPLUS_RELEASE = "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/"


@dataclass(frozen=True)
class ModelLink:
    """A model file a shipped workflow names: ComfyUI folder, direct download URL, licence, what it is."""

    name: str
    directory: str
    url: str
    licence: str
    what: str


SHIPPED_MODELS: dict[str, ModelLink] = {
    m.name: m
    for m in (
        ModelLink(
            "v1-5-pruned-emaonly-fp16.safetensors",
            "checkpoints",
            "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
            "v1-5-pruned-emaonly-fp16.safetensors",
            "CreativeML OpenRAIL-M",
            "Stable Diffusion 1.5 (any SD1.5 checkpoint works: the W+ adapter exists for SD1.5 only)",
        ),
        ModelLink(
            "sd_xl_base_1.0.safetensors",
            "checkpoints",
            "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
            "CreativeML OpenRAIL++-M",
            "SDXL base 1.0 for the scene (any checkpoint works here)",
        ),
        ModelLink(
            "e4e_ffhq_encode.pt",
            "e4e",
            _WPLUS_RELEASE + "e4e_ffhq_encode.pt",
            "MIT (omertov/encoder4editing)",
            "e4e FFHQ encoder + StyleGAN2 decoder (1.1 GB)",
        ),
        ModelLink(
            "wplus_adapter.bin",
            "wplus",
            _WPLUS_RELEASE + "wplus_adapter.bin",
            "NTU S-Lab License 1.0, NON-COMMERCIAL use only",
            "W+ adapter stage 2 for SD1.5",
        ),
    )
}

# (folder, shipped name) -> the smoke model the tests use instead (tools/smoke/writers.py writes it).
SMOKE_NAMES: dict[tuple[str, str], str] = {
    ("checkpoints", "v1-5-pruned-emaonly-fp16.safetensors"): "likeness_smoke_sd15.safetensors",
    ("checkpoints", "sd_xl_base_1.0.safetensors"): "likeness_smoke_sd15.safetensors",
}


def ui_path(root: Path, api_stem: str) -> Path:
    """The UI workflow (template) of an API workflow stem."""
    return Path(root) / WORKFLOW_DIR / f"{TITLES.get(api_stem, api_stem)}.json"


def api_path(ui_file: Path) -> Path:
    """The API twin of a UI workflow (template) file."""
    ui_file = Path(ui_file)
    stem = next((s for s, title in TITLES.items() if title == ui_file.stem), ui_file.stem)
    return ui_file.parent / "api" / f"{stem}.json"


def model_metadata(class_type: str, inputs: Mapping[str, Any]) -> list[dict[str, str]]:
    """ComfyUI's ``properties.models`` entries (name, url, directory) for the files a loader node names."""
    out = []
    for name, value in inputs.items():
        folder = FILE_LIST_INPUTS.get((class_type, name))
        link = SHIPPED_MODELS.get(value) if isinstance(value, str) else None
        if folder and link and link.directory == folder:
            out.append({"name": link.name, "url": link.url, "directory": link.directory})
    return out


def smoke_prompt(api: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an API prompt whose model file names are the smoke models' (for tests on smoke weights)."""
    out = copy.deepcopy(dict(api))
    for node in out.values():
        for name, value in node["inputs"].items():
            folder = FILE_LIST_INPUTS.get((node["class_type"], name))
            if folder and (folder, value) in SMOKE_NAMES:
                node["inputs"][name] = SMOKE_NAMES[(folder, value)]
    return out
