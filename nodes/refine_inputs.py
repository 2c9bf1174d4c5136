"""The inputs and outputs of ``Likeness Face Refine`` (sampler settings, mask and crop, optional detector)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..models.face import REGIONS
from .face_common import FACE_SELECTION_INPUTS, GROW_TOOLTIP, NO_FACE_INPUT
from .sockets import FaceAnalyzerType, Faces

__all__ = ["sampling_inputs", "mask_inputs", "optional_inputs", "OUTPUTS"]


def sampling_inputs() -> list:
    return [
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate=True,
            tooltip="Seed; face k of the batch uses seed + k.",
        ),
        io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampling steps (FaceDetailer default 20)."),
        io.Float.Input(
            "cfg", default=7.0, min=0.0, max=30.0, step=0.1, round=0.01, tooltip="Classifier-free guidance."
        ),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler", tooltip="Sampler."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal", tooltip="Scheduler."),
        io.Float.Input(
            "denoise",
            default=0.5,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="How much of the face is redrawn (FaceDetailer default 0.5).",
        ),
    ]


def mask_inputs() -> list:
    return [
        io.Combo.Input(
            "mask_region",
            options=list(REGIONS),
            default="face",
            tooltip="Redraw the whole face or only parts (eyes, nose, mouth), as FaceA-Net's local tasks.",
        ),
        io.Int.Input("grow", default=10, min=-128, max=128, advanced=True, tooltip=GROW_TOOLTIP),
        io.Float.Input(
            "crop_factor",
            default=3.0,
            min=1.0,
            max=10.0,
            step=0.1,
            advanced=True,
            tooltip="Context around the face: crop = face box x this factor (FaceDetailer 3.0).",
        ),
        io.Int.Input(
            "guide_size",
            default=512,
            min=64,
            max=2048,
            step=8,
            advanced=True,
            tooltip="The crop's shorter side is upscaled to this working size (multiple of 8).",
        ),
        io.Int.Input(
            "max_size",
            default=1024,
            min=64,
            max=4096,
            step=8,
            advanced=True,
            tooltip="Upper bound of the working size.",
        ),
        io.Float.Input(
            "feather",
            default=10.0,
            min=0.0,
            max=200.0,
            step=1.0,
            advanced=True,
            tooltip="Paste-back soft edge, in pixels: the face mask ramps from 0 to 1 over this width, inside the "
            "mask (pixels outside the mask never change).",
        ),
        io.Float.Input(
            "noise_mask_feather",
            default=40.0,
            min=0.0,
            max=200.0,
            step=1.0,
            advanced=True,
            tooltip="Soft edge of the latent noise mask, in working pixels: it ramps from 0 to 1 over this width, "
            "centred on the mask edge (inpainting models use the mask as it is).",
        ),
        io.Combo.Input(
            "color_match",
            options=["none", "reinhard"],
            default="none",
            advanced=True,
            tooltip="Match the redrawn face's colours to its surroundings (Lab mean/std).",
        ),
    ]


def optional_inputs() -> list:
    return [
        *FACE_SELECTION_INPUTS,
        NO_FACE_INPUT,
        Faces.Input("faces", optional=True, tooltip="Optional: faces from Detect Faces on this image (else detected)."),
        FaceAnalyzerType.Input(
            "face_analyzer", optional=True, tooltip="Optional detector (default: embedded offline backend)."
        ),
        io.Clip.Input(
            "clip", optional=True, tooltip="Optional: to append 'append_prompt' to the positive conditioning."
        ),
        io.String.Input(
            "append_prompt",
            default="",
            optional=True,
            tooltip="Text appended to the face prompt (needs clip; ComfyUI's Conditioning Concat), e.g. the "
            "attribute words.",
        ),
    ]


OUTPUTS = [
    io.Image.Output(
        "image",
        tooltip="The refined image (same size and batch; grey becomes RGB, an alpha channel is kept unchanged).",
    ),
    io.Mask.Output("mask", tooltip="The face mask used per image [B,H,W] (grown, before feathering)."),
    io.Image.Output(
        "crops_before",
        tooltip="Each face crop before refinement (the whole image when no face was refined).",
        is_output_list=True,
    ),
    io.Image.Output(
        "crops_after",
        tooltip="Each face crop after refinement (the whole image when no face was refined).",
        is_output_list=True,
    ),
    io.SEGS.Output("segs", tooltip="Impact-Pack-compatible SEGS (one SEG per refined face) for other detailer nodes."),
    io.String.Output("info", tooltip="Faces refined, skipped or passed through."),
]
