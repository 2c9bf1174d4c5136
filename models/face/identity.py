"""Identity score: how much each image of a batch looks like a reference face.

The score shown everywhere is the **cosine similarity** (-1..1; 1 = identical direction) between
the reference embedding and the best-matching face of each image. The verdict uses the metric
each recogniser was calibrated with:

* ``dlib_resnet_v1_128`` (embedded backend): Euclidean (L2) distance between the raw 128-d
  descriptors. **same person < 0.6** (dlib's documented threshold: "if two face descriptor vectors
  have a Euclidean distance between them less than 0.6 then they are from the same person",
  dlib.net/face_recognition.py.html; 99.38 % on LFW). **different >= 0.7** is our calibration
  (on the reference photos Grace Hopper vs the astronaut measures 0.70). dlib descriptors have a
  norm of about 1.4, so L2 0.6 corresponds to cosine ~0.91 and 0.7 to ~0.88 (``cos = 1 - d² / (2 n²)``);
  dlib's cosine scores are therefore all high, which is why the verdict does not use them.
* ArcFace (insightface packs: glintr100, w600k_r50, ...): cosine similarity. **same >= 0.40**,
  **different < 0.25**. Our calibration, bracketed by serengil/deepface's verification thresholds
  (deepface/config/threshold.py: cosine *distance* 0.68 for ArcFace = similarity 0.32, 0.55 for
  Buffalo_L = similarity 0.45). Between the two thresholds the verdict is ``uncertain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LikenessError
from .embedded import DLIB_EMBEDDING_MODEL, DLIB_INSTALL_HINT
from .types import Face

__all__ = [
    "VerdictThresholds",
    "THRESHOLDS",
    "thresholds_for",
    "cosine_similarity",
    "l2_distance",
    "IdentityScore",
    "identity_scores",
    "identity_table",
    "SAME",
    "UNCERTAIN",
    "DIFFERENT",
]

SAME, UNCERTAIN, DIFFERENT = "same person", "uncertain", "different"


@dataclass(frozen=True)
class VerdictThresholds:
    """Verdict thresholds for one recogniser.

    Attributes:
        metric: ``"l2"`` (smaller = more alike) or ``"cosine"`` (larger = more alike).
        same: ``l2 < same`` / ``cosine >= same`` -> "same person".
        different: ``l2 >= different`` / ``cosine < different`` -> "different"; else "uncertain".
        source: where the numbers come from.
    """

    metric: str
    same: float
    different: float
    source: str

    def verdict(self, cosine: float, l2: float) -> str:
        """Verdict for one pair given both measures."""
        if self.metric == "l2":
            return SAME if l2 < self.same else (DIFFERENT if l2 >= self.different else UNCERTAIN)
        return SAME if cosine >= self.same else (DIFFERENT if cosine < self.different else UNCERTAIN)


THRESHOLDS: dict[str, VerdictThresholds] = {
    "dlib": VerdictThresholds("l2", 0.6, 0.7, "dlib docs (same < 0.6); different >= 0.7 is Likeness calibration"),
    "arcface": VerdictThresholds(
        "cosine",
        0.40,
        0.25,
        "Likeness calibration between deepface's ArcFace (0.32) and Buffalo_L (0.45) similarity thresholds",
    ),
}


def thresholds_for(embedding_model: str) -> VerdictThresholds:
    """Thresholds for an ``embedding_model`` name: dlib for ``dlib*``, ArcFace for everything else."""
    return THRESHOLDS["dlib"] if embedding_model.startswith("dlib") else THRESHOLDS["arcface"]


def _vec(x: np.ndarray | Face) -> np.ndarray:
    if isinstance(x, Face):
        if x.embedding is None:
            raise LikenessError(
                "This face has no identity embedding. With the embedded backend install dlib "
                f"({DLIB_INSTALL_HINT}); with insightface use a pack that has a recognition model."
            )
        return x.embedding.astype(np.float64)
    return np.asarray(x, dtype=np.float64).reshape(-1)


def cosine_similarity(a: np.ndarray | Face, b: np.ndarray | Face) -> float:
    """Cosine similarity of two embeddings (or faces) in [-1, 1]."""
    va, vb = _vec(a), _vec(b)
    if va.shape != vb.shape:
        raise LikenessError(
            f"Cannot compare embeddings of different sizes {va.shape} and {vb.shape} (different recognisers)."
        )
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / denom) if denom > 0 else 0.0


def l2_distance(a: np.ndarray | Face, b: np.ndarray | Face) -> float:
    """Euclidean distance of the raw (not normalised) embeddings."""
    va, vb = _vec(a), _vec(b)
    if va.shape != vb.shape:
        raise LikenessError(
            f"Cannot compare embeddings of different sizes {va.shape} and {vb.shape} (different recognisers)."
        )
    return float(np.linalg.norm(va - vb))


@dataclass(frozen=True)
class IdentityScore:
    """Score of one batch image against the reference.

    Attributes:
        index: batch index. face_index: index of the best face in that image's list (-1: none).
        cosine: cosine similarity (NaN when no face). l2: raw L2 distance (NaN when no face).
        verdict: "same person" / "uncertain" / "different" / "no face".
    """

    index: int
    face_index: int
    cosine: float
    l2: float
    verdict: str


def identity_scores(
    reference: np.ndarray | Face,
    batch_faces: Sequence[Sequence[Face]],
    embedding_model: str | None = None,
    thresholds: VerdictThresholds | None = None,
) -> list[IdentityScore]:
    """Compare a reference identity with every image of a batch (best-matching face per image).

    Args:
        reference: reference embedding ``[D]`` or a :class:`Face` with one.
        batch_faces: per image, the detected faces (with embeddings from the same recogniser).
        embedding_model: recogniser name; default: the reference face's, else the first face's.
        thresholds: override the verdict thresholds.

    Raises:
        LikenessError: missing embeddings or faces from different recognisers.
    """
    ref = _vec(reference)
    model = embedding_model or (reference.embedding_model if isinstance(reference, Face) else "")
    for faces in batch_faces:
        for f in faces:
            if model and f.embedding_model and f.embedding_model != model:
                raise LikenessError(
                    f"Reference embedding is from {model!r} but a face was embedded with {f.embedding_model!r}; "
                    "compare faces analysed by the same backend."
                )
            model = model or f.embedding_model
    th = thresholds or thresholds_for(model or DLIB_EMBEDDING_MODEL)
    out = []
    for i, faces in enumerate(batch_faces):
        if not faces:
            out.append(IdentityScore(i, -1, float("nan"), float("nan"), "no face"))
            continue
        cos = [cosine_similarity(ref, f) for f in faces]
        best = int(np.argmax(cos))
        l2 = l2_distance(ref, faces[best])
        out.append(IdentityScore(i, best, cos[best], l2, th.verdict(cos[best], l2)))
    return out


def identity_table(
    scores: Sequence[IdentityScore], embedding_model: str = "", thresholds: VerdictThresholds | None = None
) -> str:
    """Readable fixed-width table of :func:`identity_scores` results, with the rule used."""
    th = thresholds or thresholds_for(embedding_model or DLIB_EMBEDDING_MODEL)
    rule = (
        f"L2 < {th.same:g} same, >= {th.different:g} different"
        if th.metric == "l2"
        else f"cosine >= {th.same:.2f} same, < {th.different:.2f} different"
    )
    lines = [
        f"identity vs reference ({embedding_model or 'unknown recogniser'}; {rule})",
        f"{'image':>5}  {'face':>4}  {'cosine':>7}  {'L2':>6}  verdict",
    ]
    for s in scores:
        if s.face_index < 0:
            lines.append(f"{s.index:>5}  {'-':>4}  {'-':>7}  {'-':>6}  {s.verdict}")
        else:
            lines.append(f"{s.index:>5}  {s.face_index:>4}  {s.cosine:>7.3f}  {s.l2:>6.3f}  {s.verdict}")
    return "\n".join(lines)
