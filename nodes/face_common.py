"""Shared face-detection glue: the FACES wire value, batch detection, and common inputs."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..models.errors import InputError
from ..models.face import SELECTION_MODES, Face, FaceAnalyzer, create_analyzer
from ..models.images import check_image_batch, to_rgb_uint8

__all__ = [
    "DetectedFaces",
    "detect_batch",
    "faces_for",
    "policy_warning",
    "FACE_SELECTION_INPUTS",
    "NO_FACE_INPUT",
    "GROW_TOOLTIP",
    "FEATHER_TOOLTIP",
]

#: The shared meaning of the mask edge inputs on every node (see models/mask_ops.py).
GROW_TOOLTIP = (
    "Grow (positive) or shrink (negative) the mask by this many pixels: a round dilation/erosion of its edge."
)
FEATHER_TOOLTIP = (
    "Soft edge in pixels: the mask ramps from 0 to 1 over this width, centred on the (grown) edge. 0 = hard edge."
)


@dataclass(frozen=True)
class DetectedFaces:
    """The value on a FACES wire: per image of a batch, every face found, plus image sizes (h, w)."""

    faces: list[list[Face]]
    sizes: list[tuple[int, int]]
    backend: str

    @property
    def batch(self) -> int:
        return len(self.faces)


def detect_batch(analyzer: FaceAnalyzer, image: torch.Tensor, where: str = "image") -> DetectedFaces:
    """Run the analyzer on every image of a ComfyUI IMAGE batch, with a progress bar and interruption.

    The batch is checked first (:func:`models.images.check_image_batch`), so an empty batch or an odd
    channel count is refused before any work, naming ``where``.
    """
    check_image_batch(image, where)
    bar = comfy.utils.ProgressBar(image.shape[0])
    found, sizes = [], []
    for i in range(image.shape[0]):
        comfy.model_management.throw_exception_if_processing_interrupted()
        rgb = to_rgb_uint8(image[i])
        found.append(list(analyzer.detect(rgb)))
        sizes.append((int(rgb.shape[0]), int(rgb.shape[1])))
        bar.update(1)
    return DetectedFaces(found, sizes, getattr(analyzer, "name", type(analyzer).__name__))


def faces_for(image: torch.Tensor, faces: DetectedFaces | None, analyzer, where: str) -> DetectedFaces:
    """The FACES of ``image``: those given (checked against the batch), else detected with ``analyzer``."""
    if faces is None:
        return detect_batch(analyzer or create_analyzer("embedded"), image, f"{where} input 'image'")
    sizes = [(int(image.shape[1]), int(image.shape[2]))] * int(image.shape[0])
    if faces.batch != image.shape[0] or list(faces.sizes) != sizes:
        raise InputError(
            f"{where} input 'faces' was detected on {faces.batch} image(s) of sizes {sorted(set(faces.sizes))[:4]}, "
            f"but input 'image' has {image.shape[0]} image(s) of {image.shape[2]}x{image.shape[1]} px. Run Detect "
            "Faces on this image, or leave 'faces' unconnected."
        )
    return faces


def policy_warning(report) -> str | None:
    """The lines of a ``PolicyReport`` about images without a face (None when every image had one)."""
    if not report.missing:
        return None
    return "\n".join(report.summary().splitlines()[1:]).replace("  image", "image")


FACE_SELECTION_INPUTS = [
    io.Combo.Input(
        "selection",
        options=list(SELECTION_MODES),
        default="largest",
        optional=True,
        tooltip="Which face: the largest (default), by index counted left to right, by index in detector order, or "
        "all faces.",
    ),
    io.Int.Input(
        "face_index",
        default=0,
        min=0,
        max=63,
        optional=True,
        advanced=True,
        tooltip="Face index for the index modes (0 = first).",
    ),
]

NO_FACE_INPUT = io.Combo.Input(
    "on_no_face",
    options=["error", "skip", "pass-through"],
    default="error",
    optional=True,
    tooltip="When an image has no face: 'error' stops with a message naming the image; 'skip' drops that image "
    "(and stops with an error when no image is left); 'pass-through' keeps it in the batch, untouched downstream, "
    "and reports it in the info/warning outputs.",
)
