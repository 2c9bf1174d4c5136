"""e4e inversion nodes: load e4e, invert a face photo to W+, preview W+."""

from __future__ import annotations

import hashlib
import logging

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy_api.latest import io

from ..models.face import apply_policy, select_batch
from ..models.files.registry import find_file
from ..models.images import fit_square, split_alpha, to_rgb_uint8
from ..models.inversion.align import RECIPES
from ..models.inversion.codes import WPlusCodes
from ..models.inversion.pipeline import WHITENING_CHOICES, invert_face, resolve_whitening
from ..models.inversion.precision import PRECISIONS
from ..models.preview.live import remember_wplus
from ..models.pstf.preprocess import recipe_landmarks
from ..models.validation import check_wplus
from .checks import node_id, wplus_in
from .e4e_runtime import LoadedE4E, preview_images
from .face_common import FACE_SELECTION_INPUTS, NO_FACE_INPUT, DetectedFaces, faces_for, policy_warning
from .folders import file_choices, search_paths, validate_file
from .sockets import E4EModel, FaceAnalyzerType, Faces, WPlus
from .ui_output import node_ui

logger = logging.getLogger(__name__)

DAMAGED_E4E = "The e4e file is damaged (its weights give NaN or huge codes): download e4e_ffhq_encode.pt again."


class LikenessLoadE4E(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadE4E",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Load e4e",
            category="likeness/inversion",
            search_aliases=["e4e", "encoder4editing", "gan inversion", "stylegan encoder", "identity"],
            description=(
                "Loads the official e4e FFHQ encoder (e4e_ffhq_encode.pt, MIT, omertov/encoder4editing; also "
                "re-hosted in the w-plus-adapter release) from models/e4e. The StyleGAN2 decoder inside is built "
                "only when a preview is asked for. ComfyUI's memory manager moves it to the GPU and back."
            ),
            inputs=[
                io.Combo.Input(
                    "e4e_name",
                    options=file_choices("e4e"),
                    tooltip="File in models/e4e (e4e_ffhq_encode.pt, MIT; see Likeness Doctor for the download).",
                ),
                io.Combo.Input(
                    "device",
                    options=["auto", "cpu"],
                    default="auto",
                    tooltip="'auto' = ComfyUI's device (GPU when present); 'cpu' keeps VRAM free.",
                ),
                io.Combo.Input(
                    "dtype",
                    options=list(PRECISIONS),
                    default="auto",
                    advanced=True,
                    tooltip="Compute precision. auto = fp16 on a GPU, bf16 on a CPU with native bf16 (AVX512-BF16 or "
                    "AMX), else fp32. fp16/bf16 on a device that would only emulate them (minutes per face) run in "
                    "fp32 instead; Invert Face's info says which was used. W+ outputs are always float32.",
                ),
            ],
            outputs=[E4EModel.Output("e4e", tooltip="The encoder, for Invert Face and Preview W+.")],
        )

    @classmethod
    def validate_inputs(cls, e4e_name: str) -> bool | str:
        return validate_file("e4e", e4e_name)

    @classmethod
    def execute(cls, e4e_name: str, device: str, dtype: str) -> io.NodeOutput:
        path = find_file("e4e", e4e_name, search_paths())
        loaded = LoadedE4E.load(path, e4e_name, device, dtype)
        decoder = "with" if loaded.inverter.has_decoder else "WITHOUT (no previews)"
        text = f"{path.name}: e4e encoder {decoder} StyleGAN2 decoder; device {device}, {dtype}"
        if loaded.precision_note:
            text += f"\n{loaded.precision_note}"
        return io.NodeOutput(loaded, ui=node_ui(cls, text))


def _uint8_batch_to_image(crops: list[torch.Tensor]) -> torch.Tensor:
    """uint8 ``[H,W,3]`` tensors (same size) -> ComfyUI IMAGE ``[B,H,W,3]`` float in [0,1]."""
    return torch.stack(crops).float() / 255.0


class LikenessInvertFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_InvertFace",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Invert Face",
            category="likeness/inversion",
            search_aliases=["e4e", "identity", "gan inversion", "w+", "face to latent", "stylegan"],
            description=(
                "Finds the face, aligns it (FFHQ recipe), optionally whitens the background, and encodes it with e4e "
                "to an absolute StyleGAN2 W+ code [18x512]: the identity condition of the W+ adapter. One code per "
                "image of the batch."
            ),
            inputs=[
                E4EModel.Input("e4e", tooltip="From Load e4e."),
                io.Image.Input("image", tooltip="Photo(s) with a face. Grey, RGBA and 16-bit images are converted."),
                io.Combo.Input(
                    "recipe",
                    options=list(RECIPES),
                    default="wplus_adapter",
                    tooltip="Alignment the consuming model was trained with: wplus_adapter (512 via 4096, no "
                    "padding), e4e_official (256, padding), pstf (512, padding, insightface 106 points; 68 points "
                    "when the face has none, said in info).",
                ),
                io.Combo.Input(
                    "whitening",
                    options=list(WHITENING_CHOICES),
                    default="auto",
                    tooltip="Background to white before encoding (the W+ adapter was trained so). auto = with the "
                    "wplus_adapter recipe ParseNet if models/face_parsing has it, else a landmark-hull mask; other "
                    "recipes none. An explicit choice is always applied; the info output says what was used.",
                ),
                *FACE_SELECTION_INPUTS,
                NO_FACE_INPUT,
                Faces.Input(
                    "faces", optional=True, tooltip="Optional: faces from Detect Faces (else they are detected here)."
                ),
                FaceAnalyzerType.Input(
                    "face_analyzer",
                    optional=True,
                    tooltip="Optional: the detector to use (default: the embedded offline backend).",
                ),
                io.Boolean.Input(
                    "reconstruct",
                    default=True,
                    optional=True,
                    advanced=True,
                    tooltip="Also render the W+ code through StyleGAN2 (slow on CPU).",
                ),
            ],
            outputs=[
                WPlus.Output(
                    "wplus",
                    tooltip="Absolute W+ codes [B,18,512] (encoder output + latent_avg). An image passed through "
                    "without a face keeps its place as an item with no code, which later nodes leave alone.",
                ),
                io.Image.Output(
                    "aligned",
                    tooltip="The aligned (and whitened) crops fed to e4e, 256x256 (the input image fitted to 256 px "
                    "where no face was used).",
                ),
                io.Image.Output(
                    "reconstruction",
                    tooltip="StyleGAN2 rendering of each W+ code (the aligned crops again if reconstruct is off).",
                ),
                io.String.Output(
                    "info", tooltip="Recipe, whitening and landmark kind used; images skipped or passed through."
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls,
        e4e: LoadedE4E,
        image: torch.Tensor,
        recipe: str,
        whitening: str,
        selection: str = "largest",
        face_index: int = 0,
        on_no_face: str = "error",
        faces: DetectedFaces | None = None,
        face_analyzer=None,
        reconstruct: bool = True,
    ) -> io.NodeOutput:
        image, _ = split_alpha(image, "Invert Face input 'image'")  # grey -> RGB, alpha dropped
        faces = faces_for(image, faces, face_analyzer, "Invert Face")
        chosen, reasons = select_batch(faces.faces, selection, face_index)
        kept, report = apply_policy(
            [c[:1] for c in chosen], on_no_face, faces.sizes, reasons=reasons, where="Invert Face"
        )
        plan = resolve_whitening(whitening, recipe, search_paths())
        jobs = [(i, n, face) for i in kept for n, face in enumerate(chosen[i] if selection == "all" else chosen[i][:1])]
        codes, crops, lines, hashes, labels = _invert_jobs(e4e, image, jobs, recipe, plan, selection == "all")
        info = "\n".join([report.summary(), *([e4e.precision_note] if e4e.precision_note else []), *lines])
        warnings = tuple(report.summary().splitlines()[1:])
        meta = {"source_sha256": hashes, "recipe": recipe, "model": e4e.name, "whitening": plan.method}
        for k, code in enumerate(codes):
            check_wplus(code, f"Invert Face: the e4e output for {labels[k]}", source=e4e.name, fix=DAMAGED_E4E)
        # one item per face found, and one absent item per image passed through (no face), in image order
        order = sorted([(i, k) for k, (i, _, _) in enumerate(jobs)] + [(i, -1) for i in report.passed_through])
        absent = tuple(n for n, (_, k) in enumerate(order) if k < 0)
        blank = torch.zeros(1, 18, 512)
        wplus = WPlusCodes(
            torch.cat([codes[k] if k >= 0 else blank for _, k in order]),
            tuple(labels[k] if k >= 0 else f"image {i} (no face)" for i, k in order),
            meta,
            warnings,
            absent,
        )
        aligned_faces = _uint8_batch_to_image(crops) if crops else None
        recon_faces = aligned_faces
        if aligned_faces is not None and reconstruct and e4e.inverter.has_decoder:
            recon_faces = preview_images(e4e, torch.cat(codes), 256)
        aligned = _interleave(image, order, aligned_faces)
        recon = _interleave(image, order, recon_faces)
        remember_wplus(node_id(cls), "Likeness_InvertFace", wplus)  # the live preview starts from it
        shown = [aligned] + ([recon] if recon_faces is not aligned_faces else [])
        return io.NodeOutput(wplus, aligned, recon, info, ui=node_ui(cls, info, shown, policy_warning(report)))


def _interleave(image: torch.Tensor, order: list, faces: torch.Tensor | None) -> torch.Tensor:
    """``[N,256,256,3]``: per output item the face crop, or the input image fitted to 256 px where no face was used."""
    return torch.stack([faces[k] if k >= 0 else fit_square(image[i], 256) for i, k in order])


def _invert_jobs(e4e: LoadedE4E, image: torch.Tensor, jobs: list, recipe: str, plan, every_face: bool):
    """Invert each ``(image index, face number, face)``; returns codes, crops, info lines, hashes, labels."""
    codes, crops, lines, hashes, labels = [], [], [], [], []
    inverter = e4e.encoder() if jobs else None
    per_face = inverter.encode_stages + 1 if inverter else 1  # alignment + whitening, then each encoder stage
    bar = comfy.utils.ProgressBar(max(1, len(jobs) * per_face))
    for k, (i, n, face) in enumerate(jobs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        rgb = to_rgb_uint8(image[i])
        landmarks, note = recipe_landmarks(face, recipe)

        def encoded(done: int, _total: int, base: int = k * per_face + 1) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(base + done)

        bar.update_absolute(k * per_face + 1)
        result = invert_face(inverter, rgb, landmarks, recipe, plan, progress=encoded)
        codes.append(result.wplus)
        crops.append(result.e4e_input_uint8())
        hashes.append(hashlib.sha256(rgb.tobytes()).hexdigest()[:16])
        labels.append(f"image {i}" + (f" face {n}" if every_face else ""))
        lines.append(
            f"{labels[-1]}: box {np.round(face.bbox).astype(int).tolist()}, recipe {recipe}, "
            f"landmarks {result.aligned.landmark_kind}, whitening {result.whitening} ({plan.reason})"
            + (f", {note}" if note else "")
        )
    return codes, crops, lines, hashes, labels


class LikenessPreviewWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_PreviewWPlus",
            display_name="Likeness Preview W+",
            category="likeness/inversion",
            search_aliases=["stylegan preview", "w+ preview", "e4e", "identity preview"],
            description="Renders W+ codes through e4e's StyleGAN2 FFHQ generator: check an inversion or an edit "
            "before diffusion.",
            inputs=[
                E4EModel.Input("e4e", tooltip="From Load e4e (its decoder renders the preview)."),
                WPlus.Input("wplus", tooltip="W+ codes to render (one image each)."),
                io.Int.Input(
                    "size",
                    default=256,
                    min=64,
                    max=1024,
                    step=64,
                    tooltip="Output size in pixels (the generator renders 1024 and is resized).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "images", tooltip="One rendering per W+ code, in batch order (items without a code are left out)."
                )
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, e4e: LoadedE4E, wplus: WPlusCodes, size: int) -> io.NodeOutput:
        given = wplus_in(cls, "wplus", wplus)
        wplus = given.only_present("Preview W+ input 'wplus'")
        images = preview_images(e4e, wplus.codes, size)
        warning = None
        if given.absent:
            warning = f"items {list(given.absent)} of the W+ batch have no code (no face): not rendered."
        return io.NodeOutput(images, ui=node_ui(cls, "\n".join(wplus.labels), [images], warning))


INVERSION_NODES = [LikenessLoadE4E, LikenessInvertFace, LikenessPreviewWPlus]
