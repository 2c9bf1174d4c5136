"""SeFi ID tokens: save, load, and apply them to a MODEL + CLIP so that the prompt word V* means the person."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..models.sefi.identity import SeFiIdentity
from .finetune_common import IDENTITIES_FOLDER, identity_path, identity_save_path
from .folders import file_choices, validate_file
from .patching.sefi import apply_sefi
from .patching.sefi_text import with_id_tokens
from .sockets import IdTokensType

logger = logging.getLogger(__name__)


class LikenessSaveIDTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_SaveIDTokens",
            display_name="Likeness Save ID Tokens (SeFi)",
            category="likeness/sefi",
            description=(
                f"Writes SeFi ID tokens to models/{IDENTITIES_FOLDER}/<name>.safetensors (atomically: an interrupted "
                "save leaves nothing) with their provenance: photo hash, steps, base-model hash, training settings."
            ),
            search_aliases=["save identity", "save sefi", "save id tokens"],
            is_output_node=True,
            inputs=[
                IdTokensType.Input("id_tokens", tooltip="From Learn ID Tokens (SeFi)."),
                io.String.Input("name", default="sefi_identity", tooltip="File name (without .safetensors)."),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    advanced=True,
                    tooltip="Replace a file of the same name; off = keep it and number the new one (_00001).",
                ),
            ],
            outputs=[io.String.Output("file_name", tooltip="The name to pick in Load ID Tokens.")],
        )

    @classmethod
    def execute(cls, id_tokens: SeFiIdentity, name: str, overwrite: bool = False) -> io.NodeOutput:
        path = id_tokens.save(identity_save_path(name, overwrite))
        logger.info("Likeness SeFi: saved ID tokens to %s", path)
        return io.NodeOutput(path.name)


class LikenessLoadIDTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadIDTokens",
            display_name="Likeness Load ID Tokens (SeFi)",
            category="likeness/sefi",
            description=f"Loads SeFi ID tokens saved in models/{IDENTITIES_FOLDER} and checks the file.",
            search_aliases=["load identity", "load sefi", "load id tokens"],
            inputs=[
                io.Combo.Input(
                    "id_tokens_name",
                    options=file_choices(IDENTITIES_FOLDER),
                    tooltip=f"A .safetensors file in models/{IDENTITIES_FOLDER} written by Save ID Tokens (SeFi).",
                ),
            ],
            outputs=[IdTokensType.Output("id_tokens", tooltip="The ID tokens, for Apply ID Tokens.")],
        )

    @classmethod
    def validate_inputs(cls, id_tokens_name: str) -> bool | str:
        return validate_file(IDENTITIES_FOLDER, id_tokens_name)

    @classmethod
    def fingerprint_inputs(cls, id_tokens_name: str):
        path = identity_path(id_tokens_name)
        return f"{path}:{path.stat().st_mtime_ns}"

    @classmethod
    def execute(cls, id_tokens_name: str) -> io.NodeOutput:
        identity = SeFiIdentity.load(identity_path(id_tokens_name))
        logger.info("Likeness SeFi: loaded %s (%d steps)", id_tokens_name, identity.provenance.steps)
        return io.NodeOutput(identity)


class LikenessApplyIDTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_ApplyIDTokens",
            display_name="Likeness Apply ID Tokens (SeFi)",
            category="likeness/sefi",
            description=(
                "Makes the prompt word V* (the placeholder) mean the learned person: at each sampling step its "
                "cross-attention keys come from that stage's key token and its values from the value token; the rest "
                "of the prompt is unchanged. Returns a MODEL and a CLIP: encode prompts that use V* with THIS CLIP "
                "and sample with THIS MODEL. Works with any sampler; stacks with the W+ adapter and IPAdapter-style "
                "patches; the inputs are never modified. SD1.5 only."
            ),
            search_aliases=["sefi", "apply identity", "id tokens", "pseudo word", "textual inversion"],
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 MODEL to sample with (may carry other patches)."),
                io.Clip.Input("clip", tooltip="The SD1.5 CLIP the ID tokens were learned with."),
                IdTokensType.Input("id_tokens", tooltip="From Learn ID Tokens or Load ID Tokens."),
                io.String.Input(
                    "placeholder",
                    default="V*",
                    tooltip="The word standing for the person in prompts, e.g. 'a photo of V* holding a basketball'. "
                    "One word, no spaces or brackets. Several identities: chain this node with other placeholders.",
                ),
                io.Float.Input(
                    "weight",
                    default=1.0,
                    min=0.0,
                    max=1.5,
                    step=0.05,
                    tooltip="1 = the learned person; 0 = the plain word 'person'; in between blends the tokens.",
                ),
            ],
            outputs=[
                io.Model.Output("model", tooltip="The patched MODEL clone (sample with it)."),
                io.Clip.Output("clip", tooltip="The CLIP clone that understands the placeholder (encode with it)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, id_tokens: SeFiIdentity, placeholder: str, weight: float) -> io.NodeOutput:
        patched_clip = with_id_tokens(clip, id_tokens.tokens, placeholder, float(weight))
        patched_model, _ = apply_sefi(model)
        return io.NodeOutput(patched_model, patched_clip)


SEFI_NODES = [LikenessSaveIDTokens, LikenessLoadIDTokens, LikenessApplyIDTokens]
