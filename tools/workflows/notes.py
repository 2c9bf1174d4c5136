"""The Read me note of a shipped workflow: which model files it needs, where they go, their licences."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...models.files.doctor import cli_command
from ...models.files.registry import MODEL_FILES
from .shipped import FILE_LIST_INPUTS, FOLDER_IN_VALUE, SDXL_NODES, shipped_link

__all__ = ["FILE_LIST_INPUTS", "model_note"]


# Files no one downloads: a workflow of this pack writes them (loader class -> what to say).
WRITTEN_FILES: dict[str, str] = {
    "Likeness_LoadFaceAIdentity": (
        "a FaceA identity (LoRA + [feat] vectors) written by Save FaceA Identity in the template 'Likeness FaceA "
        "train a face from photos'. It is derived from your photos and the SD1.5 inpainting model (CreativeML "
        "OpenRAIL-M): only train on photos of people who agreed"
    ),
    "Likeness_LoadIDTokens": (
        "SeFi ID tokens written by Save ID Tokens in the template 'Likeness SeFi learn ID tokens from one photo'. "
        "They are derived from your photo and the SD1.5 checkpoint (CreativeML OpenRAIL-M): only learn from photos "
        "of people who agreed"
    ),
}
# Extra Note paragraphs for workflows that contain these node classes.
CLASS_HINTS: dict[str, str] = {
    "Likeness_TrainFaceA": (
        "TRAINING (FaceA-Net): give 1 to 10 photos of ONE person (the paper uses 3; join them with a Batch Images "
        "node). Check the 'crops' preview: the tinted masks must sit on the face, eyes, nose and mouth. 600 steps "
        "need a GPU (the README has the measured CPU time per step and a GPU estimate). Nothing is written until "
        "Save FaceA Identity (models/likeness_identities); Cancel leaves no file. Faces are found by the embedded "
        "analyser (BSD-3/CC0 models); insightface packs are NON-COMMERCIAL."
    ),
    "Likeness_ApplyFaceAIdentity": (
        "REFINE (FaceA-Net ID-context decoupling): the scene comes from any model; Face Refine then redraws each "
        "face with the SD1.5 inpainting model, the identity's LoRA and T'_id = your ID prompt + the identity's "
        "prompts. Put the expression and accessories in the ID prompt, the scene in the scene prompt. Keep Face "
        "Refine's crop_factor equal to the training crop factor (2.0)."
    ),
    "Likeness_LearnIDTokens": (
        "SeFi-IDE (Li, Yang, Wang, Dong: 'Beyond Inserting', arXiv 2402.00631, IEEE TCSVT 2025): the authors "
        "published no code or weights; this is Likeness' implementation (README, 'SeFi ID tokens', lists what the "
        "paper states and what we chose). One photo, 600 steps: a GPU is advised. Cancel leaves no file."
    ),
    "Likeness_ApplyIDTokens": (
        "SeFi ID tokens (SeFi-IDE, arXiv 2402.00631; Likeness' own implementation: the authors published no code or "
        "weights): write the placeholder (V*) as a word in any prompt encoded with the CLIP that Apply ID "
        "Tokens returns, and sample with the MODEL it returns; prompts without V* are unchanged."
    ),
}


def _model_line(folder: str, value: str, class_type: str = "") -> str:
    link = shipped_link(folder, value)
    if folder == FOLDER_IN_VALUE:
        folder, value = value.split("/", 1)
    if link is not None:
        return f"- models/{folder}/{value}: {link.what}. Download: {link.url} . Licence: {link.licence}."
    if class_type in WRITTEN_FILES:
        return f"- models/{folder}/{value}: {WRITTEN_FILES[class_type]}."
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
                line = _model_line(folder, str(value), node["class_type"])
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
    parts += [text for cls, text in CLASS_HINTS.items() if cls in classes for text in ("", text)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).strip() + "\n"


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
