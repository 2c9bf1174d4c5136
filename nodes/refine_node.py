"""``Likeness Face Refine``: FaceA-Net-style ID-context decoupling.

The scene comes first (any model); then each face is detected, masked, cropped, redrawn by the
identity-conditioned MODEL (ComfyUI's own sampler with a latent noise mask, or inpaint conditioning
for inpainting models) and pasted back. Pixels outside the (unfeathered) face mask never change.
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

from ..models.face import apply_policy, face_mask, select_batch
from ..models.images import join_alpha, split_alpha
from ..models.mask_ops import feather_mask
from ..models.refine import crop_image, crop_mask, match_color, paste_back, plan_crop, to_segs
from .face_common import DetectedFaces, faces_for, policy_warning
from .refine_inputs import OUTPUTS, mask_inputs, optional_inputs, sampling_inputs
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
                io.Image.Input(
                    "image", tooltip="The scene (context image) to refine: RGB, RGBA, grey or grey + alpha."
                ),
                io.Model.Input(
                    "model",
                    tooltip="Identity-conditioned MODEL (e.g. from Apply W+ Adapter), or an SD1.5 inpainting model.",
                ),
                io.Vae.Input("vae", tooltip="VAE of that MODEL."),
                io.Conditioning.Input("positive", tooltip="Face prompt T_id (e.g. 'a close-up photo of a face')."),
                io.Conditioning.Input("negative", tooltip="Negative prompt."),
                *sampling_inputs(),
                *mask_inputs(),
                *optional_inputs(),
            ],
            outputs=list(OUTPUTS),
        )

    @classmethod
    def execute(cls, image, model, vae, positive, negative, seed, steps, cfg, sampler_name, scheduler, denoise,
                mask_region, grow, crop_factor, guide_size, max_size, feather, noise_mask_feather, color_match,
                selection="largest", face_index=0, on_no_face="error", faces: DetectedFaces | None = None,
                face_analyzer=None, clip=None, append_prompt="") -> io.NodeOutput:  # fmt: skip
        image, alpha = split_alpha(image, "Face Refine input 'image'")  # before any work: grey -> RGB, alpha kept
        faces = faces_for(image, faces, face_analyzer, "Face Refine")
        if clip is not None and append_prompt.strip():
            positive = _append_prompt(clip, append_prompt, positive)
        chosen, reasons = select_batch(faces.faces, selection, face_index)
        kept, report = apply_policy(chosen, on_no_face, faces.sizes, reasons=reasons, where="Face Refine")
        sampling = _Sampling(
            model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise, noise_mask_feather
        )
        plan = (mask_region, grow, crop_factor, guide_size, max_size, feather, color_match)
        out, masks, before, after, segs, lines = _refine_all(image, chosen, kept, sampling, plan, seed)
        seg_out = to_segs(
            tuple(image.shape[1:3]), [r for r, _, _ in segs], [m for _, m, _ in segs], [f.bbox for _, _, f in segs],
            ["face"] * len(segs), [float(f.score) for _, _, f in segs], cropped_images=before or None,
        )  # fmt: skip
        out = join_alpha(out, alpha)  # an alpha channel comes back untouched
        if report.skipped:
            keep = [i for i in range(image.shape[0]) if i not in report.skipped]
            out, masks = out[keep], masks[keep]
        info = "\n".join([report.summary(), *lines] + (["alpha channel kept unchanged"] if alpha is not None else []))
        # with no face refined the "crops" are the untouched images, so list outputs are never empty
        crops = (before or [image], after or [out[..., :3]])
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
