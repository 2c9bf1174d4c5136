"""InstantID's IdentityNet step: the keypoint image from FACES and the ControlNet conditioning with the ID tokens."""

from __future__ import annotations

import logging

import comfy.model_management
import torch
from comfy_api.latest import io

from ..models.errors import LikenessError
from ..models.face import apply_policy, select_batch
from ..models.pstf.kps import draw_kps
from .checks import check_widgets
from .face_common import FACE_SELECTION_INPUTS, NO_FACE_INPUT, DetectedFaces, policy_warning
from .patching import PSTFIdentity
from .sockets import Faces, PSTFIdentityType
from .ui_output import node_ui

logger = logging.getLogger(__name__)


class LikenessFaceKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_FaceKeypoints",
            display_name="Likeness Face Keypoints (IdentityNet)",
            category="likeness/sdxl",
            description=(
                "Draws InstantID's IdentityNet condition image from the faces' 5 keypoints (eyes, nose, mouth "
                "corners): limbs to the nose and coloured dots on black, pixel-identical to InstantID's draw_kps. "
                "The face's position and pose in the generated image follow it."
            ),
            search_aliases=["instantid keypoints", "draw kps", "identitynet image"],
            inputs=[
                Faces.Input("faces", tooltip="Faces from Detect Faces (any backend: only the 5 keypoints are used)."),
                *FACE_SELECTION_INPUTS,
                NO_FACE_INPUT,
            ],
            outputs=[
                io.Image.Output(
                    "keypoints",
                    tooltip="One keypoint image per photo, at the photo's size (ComfyUI's ControlNet resizes it to "
                    "the latent, centre-cropping other aspect ratios). Images without a face are black (pass-through).",
                )
            ],
        )

    @classmethod
    def execute(
        cls, faces: DetectedFaces, selection: str = "largest", face_index: int = 0, on_no_face: str = "error"
    ) -> io.NodeOutput:
        chosen, reasons = select_batch(faces.faces, selection, face_index)
        kept, report = apply_policy(chosen, on_no_face, faces.sizes, reasons=reasons, where="Face Keypoints")
        images = []
        for i, (height, width) in enumerate(faces.sizes):
            if i not in kept and on_no_face == "skip":
                continue
            canvas = torch.zeros(height, width, 3)
            for face in chosen[i] if i in kept else []:  # 'all' draws every face on one image
                drawn = torch.from_numpy(draw_kps((width, height), face.kps)).float() / 255.0
                canvas = torch.where(drawn.sum(-1, keepdim=True) > 0, drawn, canvas)
            images.append(canvas)
        if not images:
            raise LikenessError("Face Keypoints: every image was skipped (no face); nothing to draw.")
        warning = policy_warning(report)
        if warning:
            logger.warning("Likeness: %s", report.summary())
        return io.NodeOutput(torch.stack(images), ui=node_ui(cls, warning=warning))


def _context_width(control_net) -> int | None:
    """The context width the ControlNet's cross-attentions expect (None when it has none to check)."""
    model = getattr(control_net, "control_model", None)
    if model is None:
        return None
    for name, module in model.named_modules():
        if name.endswith("attn2") and hasattr(module, "to_k"):
            return int(module.to_k.weight.shape[1])
    return None


class LikenessApplyIdentityNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_ApplyIdentityNet",
            display_name="Likeness Apply IdentityNet",
            category="likeness/sdxl",
            description=(
                "InstantID's ControlNet step: the IdentityNet (loaded with Load ControlNet Model from models/"
                "controlnet) gets the keypoint image as its hint and the identity tokens as its cross-attention "
                "context instead of the text: Resampler(embedding) on the positive, Resampler(0) on the negative, as "
                "the official pipeline does."
            ),
            search_aliases=["instantid controlnet", "identitynet"],
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (SDXL text)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (SDXL text)."),
                io.ControlNet.Input(
                    "control_net",
                    tooltip="InstantID's IdentityNet (InstantX/InstantID ControlNetModel/diffusion_pytorch_model."
                    "safetensors in models/controlnet; Apache-2.0 model card, needs NON-COMMERCIAL antelopev2).",
                ),
                io.Image.Input("image", tooltip="The keypoint image from Likeness Face Keypoints."),
                PSTFIdentityType.Input("identity", tooltip="From Apply InstantID / PSTF."),
                io.Float.Input(
                    "strength",
                    default=0.8,
                    min=0.0,
                    max=2.0,
                    step=0.01,
                    tooltip="controlnet_conditioning_scale; InstantID and PSTF use 0.8.",
                ),
                io.Float.Input(
                    "start_percent", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Start of the ControlNet."
                ),
                io.Float.Input(
                    "end_percent", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="End of the ControlNet."
                ),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="Positive with the IdentityNet and the identity tokens."),
                io.Conditioning.Output("negative", tooltip="Negative with the IdentityNet and the uncond tokens."),
            ],
        )

    @classmethod
    def validate_inputs(
        cls, strength: float | None = None, start_percent: float | None = None, end_percent: float | None = None
    ) -> bool | str:
        checked = check_widgets(cls, strength=strength, start_percent=start_percent, end_percent=end_percent)
        if checked is True and start_percent is not None and end_percent is not None:
            if float(start_percent) > float(end_percent):
                return f"Apply IdentityNet: start_percent ({start_percent:g}) is above end_percent ({end_percent:g})."
        return checked

    @classmethod
    def execute(
        cls, positive, negative, control_net, image, identity: PSTFIdentity, strength, start_percent, end_percent
    ) -> io.NodeOutput:
        if identity.cond is None:
            warning = f"IdentityNet NOT applied: {identity.info}"
            logger.warning("Likeness: %s", warning)
            return io.NodeOutput(positive, negative, ui=node_ui(cls, warning=warning))
        if strength == 0:
            return io.NodeOutput(positive, negative)
        width = _context_width(control_net)
        if width is not None and width != identity.cond.shape[-1]:
            raise LikenessError(
                f"This ControlNet's cross-attention takes {width}-wide context but the identity tokens are "
                f"{identity.cond.shape[-1]}-wide: load InstantID's IdentityNet (an SDXL ControlNet) here."
            )
        device = comfy.model_management.intermediate_device()
        tokens = {"positive": identity.cond.to(device), "negative": identity.uncond.to(device)}
        hint = image.movedim(-1, 1)
        cnets: dict = {}
        out = []
        for side, conditioning in (("positive", positive), ("negative", negative)):
            entries = []
            for embeds, options in conditioning:
                options = options.copy()
                previous = options.get("control", None)
                if previous not in cnets:
                    net = control_net.copy().set_cond_hint(hint, strength, (start_percent, end_percent))
                    net.set_previous_controlnet(previous)
                    cnets[previous] = net
                options["control"] = cnets[previous]
                options["control_apply_to_uncond"] = False
                options["cross_attn_controlnet"] = tokens[side]
                entries.append([embeds, options])
            out.append(entries)
        return io.NodeOutput(out[0], out[1])


IDENTITYNET_NODES = [LikenessFaceKeypoints, LikenessApplyIdentityNet]
