"""PSTF-AttControl's face preprocessing (prepare.py / style_instantid_mask_infer.py of UnicomAI/PSTF-AttControl).

* the **largest** face of the photo;
* the identity condition: insightface antelopev2's recognition embedding
  (glintr100, 512-d) exactly as returned, **not** L2-normalised;
* the W+ condition: the FFHQ alignment from insightface's **106** landmarks at
  512 px with padding (recipe ``pstf``), then Resize(1024) -> [-1, 1] ->
  Resize(256) into e4e, **no background whitening**. Without 106 points the
  same anatomical points (eye centres, mouth corners) come from the 68-point
  landmarks, and the caller is told.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import LikenessError, NoFaceError
from ..face.select import select_faces
from ..face.types import Face
from ..inversion.align import PSTF, RECIPES, AlignedFace, align_face, e4e_input_tensor
from .model import ID_EMBED_DIM

__all__ = [
    "ANTELOPE_RECOGNISER",
    "largest_face",
    "identity_embedding",
    "recipe_landmarks",
    "align_for_pstf",
    "pstf_e4e_input",
]

logger = logging.getLogger(__name__)

ANTELOPE_RECOGNISER = "glintr100"
"""File stem of antelopev2's recognition model, the one InstantID and PSTF were trained with."""
_ANTELOPE_HINT = (
    "Use Likeness Face Analyzer with backend 'insightface' and pack 'antelopev2' (models/insightface/models/"
    "antelopev2/*.onnx; insightface models are for NON-COMMERCIAL research only)."
)


def largest_face(faces: Sequence[Face], image_index: int = 0, image_size: tuple[int, int] | None = None) -> Face:
    """The face with the largest box (PSTF keeps the largest); :class:`NoFaceError` when there is none."""
    chosen = select_faces(faces, "largest")
    if not chosen:
        size = f" ({image_size[1]}x{image_size[0]} px)" if image_size else ""
        raise NoFaceError(f"No face found in image {image_index}{size}: InstantID/PSTF need one face per photo.")
    return chosen[0]


def identity_embedding(face: Face) -> tuple[np.ndarray, str]:
    """The identity condition of InstantID / PSTF: the raw antelopev2 embedding of ``face``.

    Args:
        face: a face from the insightface backend (antelopev2 pack).

    Returns:
        ``(embedding, note)``: float32 ``[512]`` exactly as the recogniser returned it (not normalised),
        and a warning ("" when the embedding comes from antelopev2's glintr100).

    Raises:
        LikenessError: no embedding, or an embedding of another width (the embedded backend's
            128-d dlib embedding cannot drive InstantID/PSTF).
    """
    if face.embedding is None:
        raise LikenessError(
            f"The face ({face.detector or 'unknown detector'}) has no identity embedding, which InstantID/PSTF need. "
            + _ANTELOPE_HINT
        )
    emb = np.asarray(face.embedding, dtype=np.float32).reshape(-1)
    if emb.shape[0] != ID_EMBED_DIM:
        raise LikenessError(
            f"The face embedding is {emb.shape[0]}-d ({face.embedding_model or 'unknown model'}), but InstantID/PSTF "
            f"take the {ID_EMBED_DIM}-d insightface antelopev2 (glintr100) ArcFace embedding they were trained on; "
            "the embedded backend's 128-d dlib embedding cannot drive them. " + _ANTELOPE_HINT
        )
    note = ""
    if ANTELOPE_RECOGNISER not in (face.embedding_model or ""):
        note = (
            f"identity embedding from {face.embedding_model or 'an unknown recogniser'}, not antelopev2's "
            f"{ANTELOPE_RECOGNISER}: InstantID/PSTF were trained on antelopev2 and may lose likeness (buffalo_l is "
            "known to work poorly)"
        )
        logger.warning("InstantID/PSTF: %s", note)
    return emb, note


def recipe_landmarks(face: Face, recipe: str) -> tuple[np.ndarray, str]:
    """The landmarks an alignment recipe should use for ``face``, and a note when it falls back.

    ``pstf`` wants insightface's 106 points; without them the 68 points give the same
    eye centres and mouth corners (said in the note), else the 5 keypoints. The other
    recipes use the 68 points, else the 5 keypoints.

    Returns:
        ``(landmarks [N, 2], note)``; ``note`` is "" when the recipe's own landmarks were used.
    """
    if recipe not in RECIPES:
        raise LikenessError(f"Unknown alignment recipe {recipe!r}; known: {sorted(RECIPES)}.")
    if recipe == PSTF.name:
        if face.landmarks106 is not None:
            return face.landmarks106, ""
        if face.landmarks68 is not None:
            return face.landmarks68, (
                "pstf recipe aligned from 68-point landmarks (mapped: eye centres and mouth corners), because the face "
                "has no insightface 106 points (the pack lacks 2d106det.onnx, or another backend found it)"
            )
        return face.kps, "pstf recipe aligned from the 5 keypoints only (no 106- or 68-point landmarks): less exact"
    if face.landmarks68 is not None:
        return face.landmarks68, ""
    return face.kps, ""


def align_for_pstf(image: np.ndarray, face: Face) -> tuple[AlignedFace, str]:
    """The 512 px FFHQ-aligned face PSTF inverts (recipe ``pstf``), and the landmark note."""
    landmarks, note = recipe_landmarks(face, PSTF.name)
    return align_face(image, landmarks, PSTF), note


def pstf_e4e_input(aligned: AlignedFace):
    """e4e input ``[1, 3, 256, 256]`` in [-1, 1] for a PSTF-aligned face (no background whitening)."""
    return e4e_input_tensor(aligned, PSTF)
