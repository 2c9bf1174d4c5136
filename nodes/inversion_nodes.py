"""e4e inversion nodes: load e4e, invert a face photo to W+, preview W+, save and load W+ files."""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..models.errors import LikenessError
from ..models.face import apply_policy, create_analyzer, select_batch, to_rgb_uint8
from ..models.files.registry import find_file
from ..models.inversion.align import RECIPES, align_face, e4e_input_tensor
from ..models.inversion.codes import WPlusCodes, load_wplus, save_wplus
from ..models.inversion.e4e_model import E4EInverter, load_e4e
from ..models.inversion.precision import PRECISIONS, resolve_precision
from ..models.inversion.whitening import whiten_background, whitening_mask
from ..models.parsenet import PARSENET_FILE, load_parsenet
from .face_common import FACE_SELECTION_INPUTS, NO_FACE_INPUT, DetectedFaces, detect_batch
from .folders import file_list, search_paths
from .sockets import E4EModel, FaceAnalyzerType, Faces, WPlus

logger = logging.getLogger(__name__)

WPLUS_SUBFOLDER = "likeness_wplus"
WHITENING = ["auto", "parsenet", "landmark_hull", "none"]


@dataclass
class LoadedE4E:
    """What ``Likeness Load e4e`` outputs."""

    inverter: E4EInverter
    name: str
    device: str
    dtype: torch.dtype
    precision_note: str = ""

    def run_device(self) -> torch.device:
        if self.device == "cpu":
            return torch.device("cpu")
        return comfy.model_management.get_torch_device()

    @contextmanager
    def running(self):
        """The inverter on its run device for the duration; back to the offload device after (frees VRAM)."""
        device = self.run_device()
        if device.type != "cpu":
            comfy.model_management.free_memory(2 * 1024**3, device)
        inverter = self.inverter.to(device, self.dtype)
        try:
            yield inverter
        finally:
            if device.type != "cpu":
                inverter.to(comfy.model_management.unet_offload_device())


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 arrays (same size) -> ComfyUI IMAGE [B,H,W,3] float in [0,1]."""
    return torch.from_numpy(np.stack(images)).float() / 255.0


class LikenessLoadE4E(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadE4E",
            display_name="Likeness Load e4e",
            category="likeness/inversion",
            description=(
                "Loads the official e4e FFHQ encoder (e4e_ffhq_encode.pt, MIT, omertov/encoder4editing; also "
                "re-hosted in "
                "the w-plus-adapter release) from models/e4e. The StyleGAN2 decoder inside is built only when a "
                "preview is asked for."
            ),
            inputs=[
                io.Combo.Input(
                    "e4e_name", options=file_list("e4e") or ["e4e_ffhq_encode.pt"], tooltip="File in models/e4e."
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
                    tooltip="Compute precision. auto = fp16 on a GPU, bf16 on a CPU with native bf16 (AVX512-BF16 or "
                    "AMX), else fp32. fp16/bf16 on a device that would only emulate them (minutes per face) run in "
                    "fp32 instead; Invert Face's info says which was used. W+ outputs are always float32.",
                ),
            ],
            outputs=[E4EModel.Output("e4e", tooltip="The encoder, for Invert Face and Preview W+.")],
        )

    @classmethod
    def execute(cls, e4e_name: str, device: str, dtype: str) -> io.NodeOutput:
        path = find_file("e4e", e4e_name, search_paths())
        loaded = LoadedE4E(load_e4e(path), e4e_name, device, torch.float32)
        precision = resolve_precision(dtype, loaded.run_device())
        loaded.dtype, loaded.precision_note = precision.dtype, precision.note
        return io.NodeOutput(loaded)


def _resolve_whitening(method: str, recipe: str, search: dict):
    """(method, loaded ParseNet or None). Only the W+ adapter recipe whitens; 'auto' = ParseNet if its file is
    in models/face_parsing, else the landmark hull. The method used is reported in the node's info output."""
    if recipe != "wplus_adapter":
        return "none", None
    if method == "auto":
        method = (
            "parsenet" if any((Path(p) / PARSENET_FILE).is_file() for p in search["face_parsing"]) else "landmark_hull"
        )
    net = load_parsenet(find_file("face_parsing", PARSENET_FILE, search)) if method == "parsenet" else None
    return method, net


class LikenessInvertFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_InvertFace",
            display_name="Likeness Invert Face",
            category="likeness/inversion",
            description=(
                "Finds the face, aligns it (FFHQ recipe), optionally whitens the background, and encodes it with e4e "
                "to an "
                "absolute StyleGAN2 W+ code [18x512]: the identity condition of the W+ adapter. One code per image "
                "of the batch."
            ),
            inputs=[
                E4EModel.Input("e4e", tooltip="From Load e4e."),
                io.Image.Input("image", tooltip="Photo(s) with a face. Grey, RGBA and 16-bit images are converted."),
                io.Combo.Input(
                    "recipe",
                    options=list(RECIPES),
                    default="wplus_adapter",
                    tooltip="Alignment the consuming model was trained with: wplus_adapter (512 via 4096, no "
                    "padding), e4e_official (256, padding), pstf (512, padding).",
                ),
                io.Combo.Input(
                    "whitening",
                    options=WHITENING,
                    default="auto",
                    tooltip="Background to white before encoding (the W+ adapter was trained so). auto = ParseNet if "
                    "models/face_parsing has it, else a landmark-hull mask; the info output says which was used.",
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
                    tooltip="Also render the W+ code through StyleGAN2 (slow on CPU).",
                ),
            ],
            outputs=[
                WPlus.Output("wplus", tooltip="Absolute W+ codes [B,18,512] (encoder output + latent_avg)."),
                io.Image.Output(
                    "aligned",
                    tooltip="The aligned (and whitened) crops fed to e4e, 256x256 (the input images when no face was "
                    "used).",
                ),
                io.Image.Output(
                    "reconstruction",
                    tooltip="StyleGAN2 rendering of each W+ code (the aligned crops again if reconstruct is off).",
                ),
                io.String.Output(
                    "info", tooltip="Recipe, whitening and landmark kind used; images skipped or passed through."
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        e4e: LoadedE4E,
        image: torch.Tensor,
        recipe: str,
        whitening: str,
        selection: str,
        face_index: int,
        on_no_face: str,
        faces: DetectedFaces | None = None,
        face_analyzer=None,
        reconstruct: bool = True,
    ) -> io.NodeOutput:
        if faces is None:
            faces = detect_batch(face_analyzer or create_analyzer("embedded"), image)
        elif faces.batch != image.shape[0]:
            raise LikenessError(
                f"The FACES input was detected on {faces.batch} image(s) but {image.shape[0]} image(s) are given."
            )
        chosen, reasons = select_batch(faces.faces, selection, face_index)
        kept, report = apply_policy([c[:1] for c in chosen], on_no_face, faces.sizes, reasons=reasons)
        search = search_paths()
        codes, crops, lines, hashes = [], [], [], []
        bar = comfy.utils.ProgressBar(max(1, len(kept)))
        labels = []
        method, parsenet = _resolve_whitening(whitening, recipe, search)
        with e4e.running() as inverter:
            for i in kept:
                for n, face in enumerate(chosen[i] if selection == "all" else chosen[i][:1]):
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    rgb = to_rgb_uint8(image[i])
                    landmarks = face.landmarks68 if face.landmarks68 is not None else face.kps
                    aligned = align_face(rgb, landmarks, RECIPES[recipe])
                    x = e4e_input_tensor(aligned, RECIPES[recipe])
                    used = "none"
                    if method != "none":
                        mask, used = whitening_mask(
                            method, aligned.image, landmarks=aligned.landmarks, parsenet=parsenet, search_paths=search
                        )
                        x = whiten_background(x, mask)
                    with torch.inference_mode():
                        codes.append(inverter.encode(x.to(inverter.device)).cpu())
                    crops.append(((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
                    hashes.append(hashlib.sha256(rgb.tobytes()).hexdigest()[:16])
                    labels.append(f"image {i}" + (f" face {n}" if selection == "all" else ""))
                    lines.append(
                        f"{labels[-1]}: box {np.round(face.bbox).astype(int).tolist()}, recipe {recipe}, "
                        f"landmarks {aligned.landmark_kind}, whitening {used}"
                    )
                bar.update(1)
        info = "\n".join([report.summary(), *([e4e.precision_note] if e4e.precision_note else []), *lines])
        warnings = tuple(report.summary().splitlines()[1:])
        if not kept:  # every image passed through or skipped: the image outputs carry the input images
            passed = image[..., :3]
            return io.NodeOutput(
                WPlusCodes(torch.zeros(0, 18, 512), (), {"recipe": recipe}, warnings),
                passed,
                passed,
                info,
                ui=ui.PreviewText(info),
            )
        wplus = WPlusCodes(
            torch.cat(codes),
            tuple(labels),
            {"source_sha256": hashes, "recipe": recipe, "model": e4e.name, "whitening": whitening},
            warnings,
        )
        aligned_images = images_to_tensor(crops)
        recon = preview_images(e4e, wplus.codes, 256) if reconstruct and e4e.inverter.has_decoder else aligned_images
        return io.NodeOutput(wplus, aligned_images, recon, info, ui=ui.PreviewText(info))


def preview_images(e4e: LoadedE4E, codes: torch.Tensor, size: int) -> torch.Tensor:
    """W+ [B,18,512] -> IMAGE [B,size,size,3] through the e4e StyleGAN2 decoder, one code at a time."""
    if not e4e.inverter.has_decoder:
        raise LikenessError(
            f"{e4e.name} has no StyleGAN2 decoder weights (decoder.*): previews need the full e4e_ffhq_encode.pt."
        )
    bar = comfy.utils.ProgressBar(codes.shape[0])
    out = []
    with torch.inference_mode(), e4e.running() as inverter:
        for b in range(codes.shape[0]):
            comfy.model_management.throw_exception_if_processing_interrupted()
            img = inverter.decode(codes[b : b + 1].to(inverter.device), size=size, fast=size <= 256)
            out.append(((img.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1))
            bar.update(1)
    return torch.cat(out)


class LikenessPreviewWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_PreviewWPlus",
            display_name="Likeness Preview W+",
            category="likeness/inversion",
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
            outputs=[io.Image.Output("images", tooltip="One rendering per W+ code, in batch order.")],
        )

    @classmethod
    def execute(cls, e4e: LoadedE4E, wplus: WPlusCodes, size: int) -> io.NodeOutput:
        if wplus.batch == 0:
            raise LikenessError("The W+ input is empty (no face was found upstream): nothing to preview.")
        images = preview_images(e4e, wplus.codes, size)
        return io.NodeOutput(images, ui=ui.PreviewImage(images, cls=cls))


class LikenessSaveWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_SaveWPlus",
            display_name="Likeness Save W+",
            category="likeness/inversion",
            description="Saves W+ codes with their labels and provenance (source image hash, recipe, model) as "
            ".safetensors in output/likeness_wplus: a reusable, shareable identity.",
            inputs=[
                WPlus.Input("wplus", tooltip="W+ codes to save."),
                io.String.Input(
                    "filename_prefix", default="identity", tooltip="File name prefix; a counter is appended."
                ),
            ],
            outputs=[io.String.Output("path", tooltip="The file written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, wplus: WPlusCodes, filename_prefix: str) -> io.NodeOutput:
        folder = Path(folder_paths.get_output_directory()) / WPLUS_SUBFOLDER
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(filename_prefix).name or "identity"
        n = 1 + max(
            (
                int(p.stem.rsplit("_", 1)[-1])
                for p in folder.glob(f"{stem}_*.safetensors")
                if p.stem.rsplit("_", 1)[-1].isdigit()
            ),
            default=0,
        )
        path = save_wplus(folder / f"{stem}_{n:05d}.safetensors", wplus)
        return io.NodeOutput(str(path), ui=ui.PreviewText(f"saved {path}"))


class LikenessLoadWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadWPlus",
            display_name="Likeness Load W+",
            category="likeness/inversion",
            description="Loads W+ codes saved by Save W+ (or an official [1,18,512] .pth code) from "
            "models/likeness_wplus or output/likeness_wplus.",
            inputs=[
                io.Combo.Input(
                    "wplus_name",
                    options=file_list("likeness_wplus") or ["identity_00001.safetensors"],
                    tooltip="A saved W+ file.",
                )
            ],
            outputs=[WPlus.Output("wplus", tooltip="The loaded W+ codes.")],
        )

    @classmethod
    def execute(cls, wplus_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_wplus(find_file("likeness_wplus", wplus_name, search_paths())))


INVERSION_NODES = [LikenessLoadE4E, LikenessInvertFace, LikenessPreviewWPlus, LikenessSaveWPlus, LikenessLoadWPlus]
