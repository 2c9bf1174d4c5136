"""Photo -> W+: the one inversion pipeline, run by the Invert Face node and by the demo.

For one face: FFHQ-align the photo with the chosen recipe (:mod:`.align`), build the e4e input
with that recipe's normalisation, optionally paint the background white (:mod:`.whitening`; the
W+ adapter was trained on whitened faces) and encode with e4e to an absolute W+ code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import LikenessError, MissingModelError
from ..files.registry import find_file
from ..parsenet import PARSENET_FILE, ParseNet, load_parsenet
from .align import RECIPES, AlignedFace, AlignRecipe, align_face, e4e_input_tensor
from .e4e_model import E4EInverter
from .whitening import whiten_background, whitening_mask

__all__ = ["WHITENING_CHOICES", "Whitening", "FaceInversion", "resolve_whitening", "invert_face"]

logger = logging.getLogger(__name__)

#: What a user may choose; ``auto`` resolves to one of the others (:func:`resolve_whitening`).
WHITENING_CHOICES: tuple[str, ...] = ("auto", "parsenet", "landmark_hull", "none")


@dataclass(frozen=True)
class Whitening:
    """A resolved whitening choice.

    Attributes:
        method: ``"parsenet"``, ``"landmark_hull"`` or ``"none"``.
        reason: why this method (for info outputs and reports).
        parsenet: the loaded network for ``"parsenet"``, else None.
        parsenet_path: the file it was loaded from, else None.
    """

    method: str
    reason: str
    parsenet: ParseNet | None = None
    parsenet_path: Path | None = None


def resolve_whitening(choice: str, recipe: str, search_paths: Mapping[str, Sequence[Path]]) -> Whitening:
    """Decide the whitening method and load ParseNet once when it is needed.

    ``auto``: with the ``wplus_adapter`` recipe (the only pipeline trained on whitened faces)
    ParseNet when ``parse_multi_iter_90000.pth`` is in a ``face_parsing`` folder, else the
    model-free landmark hull; with other recipes ``none``. An explicit choice is always honoured.

    Raises:
        LikenessError: an unknown choice; MissingModelError: ``parsenet`` chosen without the file.
    """
    if choice not in WHITENING_CHOICES:
        raise LikenessError(f"Unknown whitening {choice!r}; choose one of {list(WHITENING_CHOICES)}.")
    if choice == "auto":
        if recipe != "wplus_adapter":
            return Whitening("none", f"auto: the {recipe} recipe does not whiten the background")
        try:
            path = find_file("face_parsing", PARSENET_FILE, search_paths)
        except MissingModelError:
            return Whitening("landmark_hull", f"auto: no face_parsing/{PARSENET_FILE}, so the model-free landmark hull")
        return Whitening("parsenet", f"auto: found {path}", load_parsenet(path), path)
    if choice == "parsenet":
        path = find_file("face_parsing", PARSENET_FILE, search_paths)
        return Whitening("parsenet", "chosen explicitly", load_parsenet(path), path)
    return Whitening(choice, "chosen explicitly")


@dataclass(frozen=True)
class FaceInversion:
    """One inverted face.

    Attributes:
        wplus: absolute W+ ``[1, 18, 512]`` float32 on the CPU.
        aligned: the aligned face (image, transform back to the photo, landmarks).
        e4e_input: what the encoder saw, ``[1, 3, 256, 256]`` in ``[-1, 1]`` (after whitening), CPU.
        whitening: the method applied (``"none"`` when the background was left alone).
    """

    wplus: torch.Tensor
    aligned: AlignedFace
    e4e_input: torch.Tensor
    whitening: str

    def e4e_input_uint8(self) -> torch.Tensor:
        """:attr:`e4e_input` as uint8 ``[256, 256, 3]`` (what the encoder saw, for previews)."""
        return ((self.e4e_input[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def invert_face(
    inverter: E4EInverter,
    image: Any,
    landmarks: Any,
    recipe: AlignRecipe | str,
    whitening: Whitening,
    progress: Callable[[int, int], None] | None = None,
) -> FaceInversion:
    """Align, normalise, whiten and encode one face.

    Args:
        inverter: a loaded e4e (on any device; the input follows its weights).
        image: the photo (anything :func:`..images.to_rgb_uint8` accepts).
        landmarks: the face's ``[68, 2]``, ``[5, 2]`` or ``[106, 2]`` points in photo pixels.
        recipe: alignment recipe or its name (:data:`.align.RECIPES`).
        whitening: from :func:`resolve_whitening`.
        progress: passed to :meth:`E4EInverter.encode` (called after each encoder stage).

    Returns:
        :class:`FaceInversion`.
    """
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise LikenessError(f"Unknown alignment recipe {recipe!r}; choose one of {list(RECIPES)}.")
        recipe = RECIPES[recipe]
    aligned = align_face(image, landmarks, recipe)
    x = e4e_input_tensor(aligned, recipe)
    if whitening.method != "none":
        mask = whitening_mask(whitening.method, aligned.image, landmarks=aligned.landmarks, parsenet=whitening.parsenet)
        x = whiten_background(x, mask)
    with torch.inference_mode():
        wplus = inverter.encode(x, progress=progress).float().cpu()
    return FaceInversion(wplus, aligned, x, whitening.method)
