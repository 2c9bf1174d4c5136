"""``Likeness Face Refine``: FaceA-Net-style ID-context decoupling.

The scene comes first (any model); then each face is detected, masked, cropped, redrawn by the identity-conditioned
MODEL from the face prompt (ComfyUI's own sampler with a latent noise mask, or inpaint conditioning for inpainting
models), and pasted back. Pixels outside the (unfeathered) face mask are never changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.samplers
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io

from ..models.face import REGIONS, apply_policy, create_analyzer, face_mask, select_batch
from ..models.mask_ops import feather_mask
from ..models.refine import crop_image, crop_mask, match_color, paste_back, plan_crop, to_segs
from .face_common import FACE_SELECTION_INPUTS, GROW_TOOLTIP, NO_FACE_INPUT, DetectedFaces, detect_batch, policy_warning
from .sockets import FaceAnalyzerType, Faces
from .ui_output import node_ui

logger = logging.getLogger(__name__)


def _is_inpaint_model(model) -> bool:
    return int(model.model.model_config.unet_config.get("in_channels", 4)) == 9


def _append_prompt(clip, text: str, positive):
    """``positive`` with ``text`` appended as extra tokens: ComfyUI's own CLIPTextEncode + ConditioningConcat."""
    from nodes import CLIPTextEncode, ConditioningConcat  # ComfyUI's top-level nodes.py

    (extra,) = CLIPTextEncode().encode(clip, text)
    (out,) = ConditioningConcat().concat(positive, extra)
    return out


@dataclass(frozen=True)
class _Sampling:
    """The sampler settings of one node call."""

    model: object
    vae: object
    positive: list
    negative: list
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    noise_mask_feather: float

    def redraw(self, crop: torch.Tensor, mask_crop: torch.Tensor, seed: int) -> torch.Tensor:
        """Redraw one crop ``[1,h,w,3]`` inside ``mask_crop`` ``[h,w]``; returns the decoded crop."""
        from nodes import InpaintModelConditioning, common_ksampler  # ComfyUI's top-level nodes.py

        positive, negative = self.positive, self.negative
        if _is_inpaint_model(self.model):
            positive, negative, latent = InpaintModelConditioning().encode(
                positive, negative, crop, self.vae, mask_crop[None], noise_mask=True
            )
        else:
            noise_mask = feather_mask(mask_crop, self.noise_mask_feather)
            latent = {"samples": self.vae.encode(crop[..., :3]), "noise_mask": noise_mask[None, None]}
        (out,) = common_ksampler(
            self.model, seed, self.steps, self.cfg, self.sampler_name, self.scheduler, positive, negative, latent,
            denoise=self.denoise,
        )  # fmt: skip
        return self.vae.decode(out["samples"])[..., :3].float().clamp(0, 1)


def _sampling_inputs() -> list:
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


def _mask_inputs() -> list:
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


def _optional_inputs() -> list:
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


_OUTPUTS = [
    io.Image.Output("image", tooltip="The refined image (same size and batch)."),
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


class LikenessFaceRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_FaceRefine",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Face Refine",
            category="likeness/refine",
            search_aliases=["face detailer", "identity", "face fix", "inpaint face", "faceanet"],
            description=(
                "FaceA-Net-style refinement: detects each face in a finished scene, crops it with context, redraws "
                "the masked face with the identity-conditioned MODEL (e.g. SD1.5 + W+ adapter) from the face prompt, "
                "and pastes it back. Pixels outside the face mask stay exactly as they were."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The scene (context image) to refine."),
                io.Model.Input(
                    "model",
                    tooltip="Identity-conditioned MODEL (e.g. from Apply W+ Adapter), or an SD1.5 inpainting model.",
                ),
                io.Vae.Input("vae", tooltip="VAE of that MODEL."),
                io.Conditioning.Input("positive", tooltip="Face prompt T_id (e.g. 'a close-up photo of a face')."),
                io.Conditioning.Input("negative", tooltip="Negative prompt."),
                *_sampling_inputs(),
                *_mask_inputs(),
                *_optional_inputs(),
            ],
            outputs=list(_OUTPUTS),
        )

    @classmethod
    def execute(cls, image, model, vae, positive, negative, seed, steps, cfg, sampler_name, scheduler, denoise,
                mask_region, grow, crop_factor, guide_size, max_size, feather, noise_mask_feather, color_match,
                selection="largest", face_index=0, on_no_face="error", faces: DetectedFaces | None = None,
                face_analyzer=None, clip=None, append_prompt="") -> io.NodeOutput:  # fmt: skip
        if clip is not None and append_prompt.strip():
            positive = _append_prompt(clip, append_prompt, positive)
        if faces is None:
            faces = detect_batch(face_analyzer or create_analyzer("embedded"), image)
        chosen, reasons = select_batch(faces.faces, selection, face_index)
        kept, report = apply_policy(chosen, on_no_face, faces.sizes, reasons=reasons)
        sampling = _Sampling(
            model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise, noise_mask_feather
        )
        plan = (mask_region, grow, crop_factor, guide_size, max_size, feather, color_match)
        out, masks, before, after, segs, lines = _refine_all(image, chosen, kept, sampling, plan, seed)
        seg_out = to_segs(
            tuple(image.shape[1:3]), [r for r, _, _ in segs], [m for _, m, _ in segs], [f.bbox for _, _, f in segs],
            ["face"] * len(segs), [float(f.score) for _, _, f in segs], cropped_images=before or None,
        )  # fmt: skip
        if report.skipped:
            keep = [i for i in range(image.shape[0]) if i not in report.skipped]
            out, masks = out[keep], masks[keep]
        info = "\n".join([report.summary(), *lines])
        # with no face refined the "crops" are the untouched images, so list outputs are never empty
        crops = (before or [image[..., :3]], after or [out[..., :3]])
        return io.NodeOutput(out, masks, *crops, seg_out, info, ui=node_ui(cls, info, warning=policy_warning(report)))


def _refine_all(image, chosen, kept, sampling: _Sampling, plan: tuple, seed: int):
    """Redraw every chosen face of the kept images; returns image, masks, crops, SEG parts and info lines."""
    mask_region, grow, crop_factor, guide_size, max_size, feather, color_match = plan
    height, width = image.shape[1:3]
    out = image.clone()
    masks = torch.zeros(image.shape[0], height, width)
    before, after, segs, lines = [], [], [], []
    jobs = [(i, face) for i in kept for face in chosen[i]]
    bar = comfy.utils.ProgressBar(max(1, len(jobs)))
    for k, (i, face) in enumerate(jobs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        region = plan_crop(face.bbox, (height, width), crop_factor, guide_size, max_size)
        mask = face_mask(face, height, width, region=mask_region, grow=grow)
        masks[i] = torch.maximum(masks[i], mask)
        crop = crop_image(image[i : i + 1], region)
        mask_crop = crop_mask(mask, region)
        redrawn = sampling.redraw(crop, mask_crop, seed + k)
        if color_match != "none":
            redrawn = match_color(redrawn, crop[..., :3], mask_crop, method=color_match)
        out[i : i + 1] = paste_back(out[i : i + 1], redrawn.to(out.dtype), region, mask, feather=feather)
        before.append(crop[..., :3])
        after.append(redrawn)
        segs.append((region, mask, face))
        lines.append(
            f"image {i}: face at {np.round(face.bbox).astype(int).tolist()} redrawn at "
            f"{region.work_w}x{region.work_h} (seed {seed + k})"
        )
        bar.update(1)
    return out, masks, before, after, segs, lines


REFINE_NODES = [LikenessFaceRefine]
