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
    "FOLDER_IN_VALUE",
    "SDXL_NODES",
    "WORKFLOW_DIR",
    "TITLES",
    "ModelLink",
    "SHIPPED_MODELS",
    "SMOKE_NAMES",
    "SDXL_SMOKE_NAMES",
    "shipped_link",
    "ui_path",
    "api_path",
    "model_metadata",
    "smoke_prompt",
]

FOLDER_IN_VALUE = "<folder>/"
"""A file-list combo whose values start with their folder key (``instantid/ip-adapter.bin``)."""
# Combos whose options are files on the user's machine: (class_type, input) -> folder.
FILE_LIST_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoadImage", "image"): "input",
    ("Likeness_LoadE4E", "e4e_name"): "e4e",
    ("Likeness_LoadWPlusAdapter", "adapter_name"): "wplus",
    ("Likeness_LoadDirections", "direction_set"): "likeness_directions",
    ("Likeness_LoadWPlus", "wplus_name"): "likeness_wplus",
    ("Likeness_LoadPSTF", "adapter_name"): FOLDER_IN_VALUE,
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("Likeness_LoadFaceAIdentity", "identity_name"): "likeness_identities",
    ("Likeness_LoadIDTokens", "id_tokens_name"): "likeness_identities",
}
# Nodes that exist for SDXL only (InstantID, PSTF-AttControl): their workflows run on the SDXL smoke model.
SDXL_NODES = frozenset({"Likeness_LoadPSTF", "Likeness_ApplyPSTF", "Likeness_ApplyIdentityNet"})
WORKFLOW_DIR = "example_workflows"
# API stem -> template title (the UI file's name: the template browser shows it as it is).
TITLES: dict[str, str] = {
    "likeness_portrait": "Likeness portrait with edited attributes",
    "likeness_attribute_sweep": "Likeness attribute sweep",
    "likeness_identity_mix": "Likeness identity mix",
    "likeness_face_refine": "Likeness face refine in a scene",
    "likeness_sdxl_instantid": "Likeness InstantID portrait (SDXL)",
    "likeness_sdxl_pstf_attributes": "Likeness PSTF portrait with edited attributes (SDXL)",
    "likeness_sdxl_pstf_sweep": "Likeness PSTF attribute sweep (SDXL)",
    "likeness_facea_train": "Likeness FaceA train a face from photos",
    "likeness_facea_refine": "Likeness FaceA refine a face in any scene",
    "likeness_sefi_learn": "Likeness SeFi learn ID tokens from one photo",
    "likeness_sefi_portraits": "Likeness SeFi portraits with V* in the prompt",
    "likeness_sefi_seed_sweep": "Likeness SeFi one prompt over four seeds",
}

_WPLUS_RELEASE = "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/"
_INSTANTID = "https://huggingface.co/InstantX/InstantID/resolve/main/"
_INSTANTID_LICENCE = (
    "Apache-2.0 (InstantX/InstantID model card); it works with insightface antelopev2, whose models are "
    "NON-COMMERCIAL research only"
)


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
            "SDXL base 1.0 (InstantID / PSTF need an SDXL model; the face refine's scene takes any checkpoint)",
        ),
        ModelLink(
            "sd-v1-5-inpainting.ckpt",
            "checkpoints",
            "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting/resolve/main/"
            "sd-v1-5-inpainting.ckpt",
            "CreativeML OpenRAIL-M",
            "Stable Diffusion 1.5 inpainting (9-channel UNet): FaceA-Net trains and redraws faces with it; a plain "
            "SD1.5 checkpoint works less well, SDXL not at all",
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
        ModelLink(
            "ip-adapter.bin",
            "instantid",
            _INSTANTID + "ip-adapter.bin",
            _INSTANTID_LICENCE,
            "InstantID face adapter for SDXL (Resampler + IP-Adapter attention)",
        ),
        ModelLink(
            "instantid/diffusion_pytorch_model.safetensors",
            "controlnet",
            _INSTANTID + "ControlNetModel/diffusion_pytorch_model.safetensors",
            _INSTANTID_LICENCE,
            "InstantID IdentityNet (an SDXL ControlNet on face keypoints)",
        ),
    )
}

# (folder, shipped name) -> the smoke model the tests use instead (tools/smoke/writers.py writes it).
SMOKE_NAMES: dict[tuple[str, str], str] = {
    ("checkpoints", "v1-5-pruned-emaonly-fp16.safetensors"): "likeness_smoke_sd15.safetensors",
    ("checkpoints", "sd_xl_base_1.0.safetensors"): "likeness_smoke_sd15.safetensors",
    ("checkpoints", "sd-v1-5-inpainting.ckpt"): "likeness_smoke_sd15_inpainting.ckpt",
    ("likeness_identities", "facea_identity.safetensors"): "likeness_smoke_facea.safetensors",
}
# The same for workflows with :data:`SDXL_NODES` (the face refine's scene model is any checkpoint; these need SDXL).
SDXL_SMOKE_NAMES: dict[tuple[str, str], str] = {
    ("checkpoints", "sd_xl_base_1.0.safetensors"): "likeness_smoke_sdxl.safetensors",
}


def shipped_link(folder: str, value: str) -> ModelLink | None:
    """The shipped model a file-list combo value names in ``folder`` (a :data:`FILE_LIST_INPUTS` value), if any."""
    if folder == FOLDER_IN_VALUE and "/" in value:
        folder, value = value.split("/", 1)
    link = SHIPPED_MODELS.get(value)
    return link if link is not None and link.directory == folder else None


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
        link = shipped_link(folder, value) if folder and isinstance(value, str) else None
        if link is not None:
            out.append({"name": link.name, "url": link.url, "directory": link.directory})
    return out


def smoke_prompt(api: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an API prompt whose model file names are the smoke models' (for tests on smoke weights)."""
    out = copy.deepcopy(dict(api))
    sdxl = any(node["class_type"] in SDXL_NODES for node in out.values())
    names = {**SMOKE_NAMES, **SDXL_SMOKE_NAMES} if sdxl else SMOKE_NAMES
    for node in out.values():
        for name, value in node["inputs"].items():
            folder = FILE_LIST_INPUTS.get((node["class_type"], name))
            if folder and (folder, value) in names:
                node["inputs"][name] = names[(folder, value)]
    return out
