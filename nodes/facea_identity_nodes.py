"""FaceA identity files and their use: Save / Load FaceA Identity, Apply FaceA Identity."""

from __future__ import annotations

import os

from comfy_api.latest import io, ui

from ..models.errors import LikenessError
from ..models.facea import FaceAIdentity
from .finetune_common import IDENTITIES_FOLDER, identity_path, identity_save_path
from .folders import file_choices, validate_file
from .patching.facea import apply_identity
from .sockets import FaceAIdentityType, LoraModel

CATEGORY = "likeness/facea"
PROMPTS = {"face + parts": None, "face": ("face",), "none": ()}


def describe(identity: FaceAIdentity, where: str = "") -> str:
    """A few lines for the UI: prompts, vectors, LoRA, steps, provenance."""
    p = identity.provenance
    lora = identity.meta.get("lora", {})
    lines = [
        f"FaceA identity{(' ' + where) if where else ''}: class word '{identity.class_word}', {p.steps} steps, "
        f"{len(p.photo_sha256)} photo(s), trained {p.created_utc}",
        "prompts: " + "; ".join(f"'{s.prompt}' + {s.count} vectors" for s in identity.slots.values()),
        f"LoRA: rank {lora.get('rank', '?')}, alpha {lora.get('alpha', '?')}, {lora.get('modules', '?')} layers "
        f"({lora.get('targets', '?')})",
        f"base model: {p.extra.get('base_model_file') or 'unknown file'}, UNet sha256 {p.base_model_sha256[:12]}...",
    ]
    for t in identity.meta.get("transplants", []):
        lines.append(
            f"transplant: {t.get('tasks')} for {t.get('steps')} steps from {len(t.get('photo_sha256', []))} "
            "other photo(s)"
        )
    return "\n".join(lines)


class LikenessSaveFaceAIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_SaveFaceAIdentity",
            display_name="Likeness Save FaceA Identity",
            category=CATEGORY,
            search_aliases=["save facea", "save identity", "export face lora"],
            description=(
                f"Writes a FaceA identity as ONE .safetensors in models/{IDENTITIES_FOLDER}: the UNet LoRA in the "
                "key format ComfyUI's LoraLoader reads (copy the file to models/loras to use the LoRA alone), the "
                "[feat] vectors with their prompts and class word, and provenance (photo hashes, steps, base-model "
                "hash). Written atomically: an interrupted save leaves no file."
            ),
            inputs=[
                FaceAIdentityType.Input("identity", tooltip="The identity from Train Face or Transplant Attribute."),
                io.String.Input(
                    "name",
                    default="facea_identity",
                    tooltip="File name (without .safetensors). An existing file is kept and the new one "
                    "numbered _00001, _00002... unless overwrite is on.",
                ),
                io.Boolean.Input(
                    "overwrite", default=False, advanced=True, tooltip="Replace an existing file of the same name."
                ),
            ],
            outputs=[io.String.Output("path", tooltip="The file written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, identity: FaceAIdentity, name: str, overwrite: bool = False) -> io.NodeOutput:
        path = identity.save(identity_save_path(name, overwrite))
        text = f"saved {path}\n{describe(identity)}"
        return io.NodeOutput(str(path), ui=ui.PreviewText(text))


class LikenessLoadFaceAIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadFaceAIdentity",
            display_name="Likeness Load FaceA Identity",
            category=CATEGORY,
            search_aliases=["load facea", "load identity", "face lora"],
            description=f"Loads a FaceA identity saved by Save FaceA Identity from models/{IDENTITIES_FOLDER}, "
            "validating every field.",
            inputs=[
                io.Combo.Input(
                    "identity_name",
                    options=file_choices(IDENTITIES_FOLDER),
                    tooltip=f"A .safetensors file in models/{IDENTITIES_FOLDER} (press R after saving one).",
                ),
            ],
            outputs=[
                FaceAIdentityType.Output("identity", tooltip="The identity, for Apply FaceA Identity or a transplant."),
                LoraModel.Output("lora", tooltip="Its UNet LoRA alone as ComfyUI's LORA_MODEL."),
                io.String.Output("info", tooltip="Prompts, LoRA, steps and provenance of the identity."),
            ],
        )

    @classmethod
    def validate_inputs(cls, identity_name: str) -> bool | str:
        return validate_file(IDENTITIES_FOLDER, identity_name)

    @classmethod
    def fingerprint_inputs(cls, identity_name: str):
        try:
            st = os.stat(identity_path(identity_name))
        except LikenessError:
            return identity_name
        return f"{identity_name}:{st.st_mtime_ns}:{st.st_size}"

    @classmethod
    def execute(cls, identity_name: str) -> io.NodeOutput:
        path = identity_path(identity_name)
        identity = FaceAIdentity.load(path)
        info = describe(identity, f"'{identity_name}'")
        return io.NodeOutput(identity, dict(identity.lora), info, ui=ui.PreviewText(info))


class LikenessApplyFaceAIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_ApplyFaceAIdentity",
            display_name="Likeness Apply FaceA Identity",
            category=CATEGORY,
            search_aliases=["apply facea", "use identity", "face lora prompt"],
            description=(
                "Applies a FaceA identity to the SD1.5 (inpainting) MODEL and the ID prompt: the MODEL gets the "
                "identity's LoRA (ComfyUI's LoRA path) and the prompt is extended along the token axis to "
                "T'_id = T_id + T_face + every T_v, each with its learned [feat] vectors. Feed both to Face Refine "
                "(or any inpainting sampler)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 inpainting MODEL the identity was trained on."),
                io.Conditioning.Input(
                    "conditioning",
                    tooltip="The ID prompt T_id (expression, accessories), encoded "
                    "with that model's CLIP, e.g. 'a smiling face, looking at the camera'.",
                ),
                FaceAIdentityType.Input("identity", tooltip="From Load FaceA Identity or Train Face."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-4.0,
                    max=4.0,
                    step=0.05,
                    tooltip="LoRA strength (1 = as trained, 0 = prompts only).",
                ),
                io.Combo.Input(
                    "prompts",
                    options=list(PROMPTS),
                    default="face + parts",
                    advanced=True,
                    tooltip="Which learned prompts to append: all (the paper), the face prompt only, "
                    "or none (LoRA only).",
                ),
            ],
            outputs=[
                io.Model.Output("model", tooltip="The MODEL with the identity's LoRA (a clone)."),
                io.Conditioning.Output(
                    "conditioning", tooltip="T'_id: the ID prompt followed by the identity's prompts."
                ),
            ],
        )

    @classmethod
    def execute(cls, model, conditioning, identity: FaceAIdentity, strength: float, prompts: str = "face + parts"):
        patched, cond = apply_identity(model, conditioning, identity, strength, PROMPTS[prompts])
        return io.NodeOutput(patched, cond)


FACEA_IDENTITY_NODES = [LikenessSaveFaceAIdentity, LikenessLoadFaceAIdentity, LikenessApplyFaceAIdentity]
