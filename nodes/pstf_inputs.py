"""The optional inputs of Apply InstantID / PSTF (face, W+ stream, mask, policies)."""

from __future__ import annotations

from comfy_api.latest import io

from .face_common import NO_FACE_INPUT
from .sockets import FaceAnalyzerType, Faces, WPlus

__all__ = ["face_and_attribute_inputs"]


def face_and_attribute_inputs() -> list:
    """The optional inputs of Apply InstantID / PSTF: the face, the W+ stream, the mask and policies."""
    return [
        Faces.Input(
            "faces",
            optional=True,
            tooltip="Faces from Detect Faces with the insightface antelopev2 analyzer (needs its 512-d "
            "embedding; the embedded backend's 128-d one cannot drive InstantID).",
        ),
        io.Image.Input(
            "image",
            optional=True,
            tooltip="Or a photo: the face is detected here with insightface antelopev2 "
            "(models/insightface/models/antelopev2, NON-COMMERCIAL).",
        ),
        FaceAnalyzerType.Input(
            "face_analyzer", optional=True, tooltip="Analyzer for 'image' (default: insightface antelopev2)."
        ),
        WPlus.Input(
            "wplus",
            optional=True,
            tooltip="PSTF only: absolute W+ code(s) from Invert Face (recipe pstf), Edit Attributes or "
            "Attribute Sweep; a batch = one code per latent.",
        ),
        io.Float.Input(
            "wplus_weight",
            default=0.6,
            min=0.0,
            max=3.0,
            step=0.05,
            optional=True,
            tooltip="W+ attribute strength (style_adapter_scale): PSTF's default is 0.6.",
        ),
        io.Mask.Input(
            "attn_mask",
            optional=True,
            tooltip="Face mask in the output frame. confine: the adapter acts only inside it. hold_background: "
            "outside it every image of a sweep copies the strength-0 image.",
        ),
        io.Combo.Input(
            "mask_mode",
            options=["confine", "hold_background"],
            default="confine",
            optional=True,
            advanced=True,
            tooltip="hold_background: background and pose fixed across a sweep (use one seed for all latents: "
            "LatentBatchSeedBehavior fixed).",
        ),
        io.Int.Input(
            "reference_row",
            default=-1,
            min=-1,
            max=255,
            optional=True,
            advanced=True,
            tooltip="hold_background: the unedited sweep point; -1 = the W+ code labelled with strength 0.",
        ),
        io.Combo.Input(
            "multi_image",
            options=["average", "per_latent"],
            default="average",
            optional=True,
            advanced=True,
            tooltip="Several photos: average their embeddings into one identity, or one identity per latent.",
        ),
        NO_FACE_INPUT,
    ]
