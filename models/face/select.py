"""Which face(s) to use, and what to do with images that have none.

Selection modes:
  * ``largest`` (default): the face with the largest box area (fixes "the smallest face was used").
  * ``index_ltr``: the ``index``-th face counted left to right by box ``x1``.
  * ``index_detector``: the ``index``-th face in detector order (what older packs call ``face[0]``).
  * ``all``: every face, left to right.
Faces below ``min_size`` (shorter box side, pixels) or ``min_score`` are dropped first.

No-face policy (per batch image):
  * ``error``: raise :class:`NoFaceError` naming the batch index and image size.
  * ``skip``: drop the image from the outputs; the report lists it.
  * ``pass-through``: keep the image but leave it unchanged; the report lists it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..errors import LikenessError, NoFaceError
from .types import Face

__all__ = [
    "SELECTION_MODES",
    "NoFacePolicy",
    "PolicyReport",
    "filter_faces",
    "select_faces",
    "select_batch",
    "apply_policy",
]

logger = logging.getLogger(__name__)

SELECTION_MODES = ("largest", "index_ltr", "index_detector", "all")


class NoFacePolicy(str, Enum):
    """What to do with a batch image in which no usable face was found."""

    ERROR = "error"
    SKIP = "skip"
    PASS_THROUGH = "pass-through"

    @classmethod
    def parse(cls, value: str | NoFacePolicy) -> NoFacePolicy:
        """Accept the enum, its value, or ``passthrough``/``pass_through`` spellings."""
        if isinstance(value, NoFacePolicy):
            return value
        key = str(value).strip().lower().replace("_", "-")
        key = "pass-through" if key == "passthrough" else key
        for member in cls:
            if member.value == key:
                return member
        raise LikenessError(f"Unknown no-face policy {value!r}; choose one of {[m.value for m in cls]}.")


def filter_faces(faces: Sequence[Face], min_size: float = 0, min_score: float = 0) -> list[Face]:
    """Faces whose shorter box side is >= ``min_size`` px and score >= ``min_score``, order kept."""
    return [f for f in faces if f.size >= min_size and f.score >= min_score]


def _check_mode(mode: str, index: int) -> None:
    if mode not in SELECTION_MODES:
        raise LikenessError(f"Unknown face selection mode {mode!r}; choose one of {list(SELECTION_MODES)}.")
    if index < 0:
        raise LikenessError(f"Face index must be >= 0; got {index}.")


def select_faces(
    faces: Sequence[Face], mode: str = "largest", index: int = 0, min_size: float = 0, min_score: float = 0
) -> list[Face]:
    """Select faces from one image's detections (see the module docstring for the modes).

    Returns:
        ``[]`` when nothing passes the filters or ``index`` is out of range; one face for the
        index/largest modes; all remaining faces, left to right, for ``all``.
    """
    _check_mode(mode, index)
    kept = filter_faces(faces, min_size, min_score)
    if not kept:
        return []
    if mode == "largest":
        return [max(kept, key=lambda f: f.area)]
    if mode == "all":
        return sorted(kept, key=lambda f: float(f.bbox[0]))
    ordered = sorted(kept, key=lambda f: float(f.bbox[0])) if mode == "index_ltr" else list(kept)
    return [ordered[index]] if index < len(ordered) else []


def _reason(faces: Sequence[Face], mode: str, index: int, min_size: float, min_score: float) -> str:
    if not faces:
        return "no face detected"
    kept = filter_faces(faces, min_size, min_score)
    if not kept:
        best = max(faces, key=lambda f: f.size)
        return (
            f"{len(faces)} face(s) detected but none passes min_size {min_size:g} px / min_score {min_score:g} "
            f"(largest {best.size:.0f} px, best score {max(f.score for f in faces):.2f})"
        )
    return f"face index {index} requested ({mode}) but only {len(kept)} face(s) after filtering"


def select_batch(
    batch_faces: Sequence[Sequence[Face]],
    mode: str = "largest",
    index: int = 0,
    min_size: float = 0,
    min_score: float = 0,
) -> tuple[list[list[Face]], dict[int, str]]:
    """:func:`select_faces` for every image; returns the selections and ``{batch index: why empty}``."""
    _check_mode(mode, index)
    selected, reasons = [], {}
    for i, faces in enumerate(batch_faces):
        chosen = select_faces(faces, mode, index, min_size, min_score)
        selected.append(chosen)
        if not chosen:
            reasons[i] = _reason(faces, mode, index, min_size, min_score)
    return selected, reasons


def _indices(items: Sequence[int], limit: int = 10) -> str:
    """``[1, 2, 3]``, or the first ``limit`` and how many more."""
    shown = ", ".join(str(i) for i in items[:limit])
    return f"[{shown}]" if len(items) <= limit else f"[{shown}, ... and {len(items) - limit} more]"


@dataclass
class PolicyReport:
    """Outcome of :func:`apply_policy`.

    Attributes:
        policy: the policy applied.
        kept: batch indices that have a selected face (to be processed).
        skipped: ``{batch index: reason}`` dropped from the outputs (policy ``skip``).
        passed_through: ``{batch index: reason}`` returned unchanged (policy ``pass-through``).
        batch_size: number of images in the batch.
    """

    policy: NoFacePolicy
    kept: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    passed_through: dict[int, str] = field(default_factory=dict)
    batch_size: int = 0

    @property
    def missing(self) -> dict[int, str]:
        """Every batch index without a usable face, with the reason."""
        return {**self.skipped, **self.passed_through}

    def summary(self) -> str:
        """One line per image without a face, after a header; suitable for a UI text output."""
        lines = [f"faces found in {len(self.kept)}/{self.batch_size} image(s); no-face policy '{self.policy.value}'"]
        for i, why in sorted(self.skipped.items()):
            lines.append(f"  image {i}: skipped ({why})")
        for i, why in sorted(self.passed_through.items()):
            lines.append(f"  image {i}: passed through unchanged ({why})")
        return "\n".join(lines)


def apply_policy(
    batch_faces: Sequence[Sequence[Face]],
    policy: str | NoFacePolicy,
    image_sizes: Sequence[tuple[int, int]],
    *,
    reasons: Mapping[int, str] | None = None,
    backend: str | None = None,
    det_thresh: float | None = None,
    det_size: int | None = None,
    where: str | None = None,
) -> tuple[list[int], PolicyReport]:
    """Apply the no-face policy to a batch of (already selected) faces.

    Args:
        batch_faces: per image, the faces to use (empty = none).
        policy: ``"error"``, ``"skip"`` or ``"pass-through"``.
        image_sizes: per image ``(height, width)`` in pixels (quoted in messages).
        reasons: optional ``{batch index: why empty}`` from :func:`select_batch`.
        backend, det_thresh, det_size: quoted in the error's advice when given.
        where: the node (and input) the images came in by, quoted first in errors.

    Returns:
        ``(kept batch indices, report)``.

    Raises:
        NoFaceError: policy ``error`` and at least one image has no face; the message names the
            first such batch index, its size, every failing index and what to try. Policy ``skip``
            when no image has a face (nothing would be left to output); the message suggests
            ``pass-through``.
    """
    pol = NoFacePolicy.parse(policy)
    if len(image_sizes) != len(batch_faces):
        raise LikenessError(f"apply_policy got {len(batch_faces)} face lists but {len(image_sizes)} image sizes.")
    reasons = dict(reasons or {})
    missing = {i: reasons.get(i, "no face detected") for i, faces in enumerate(batch_faces) if not faces}
    kept = [i for i, faces in enumerate(batch_faces) if faces]
    report = PolicyReport(policy=pol, kept=kept, batch_size=len(batch_faces))
    prefix = f"{where}: " if where else ""
    if missing and pol is NoFacePolicy.ERROR:
        first = min(missing)
        h, w = image_sizes[first]
        others = f" (also images {_indices(sorted(missing)[1:])})" if len(missing) > 1 else ""
        thresh = f" (now {det_thresh:g})" if det_thresh is not None else ""
        size = f" (now {det_size})" if det_size is not None else ""
        other = {"embedded": "the insightface", "insightface": "the embedded"}.get(backend or "", "another")
        raise NoFaceError(
            f"{prefix}No usable face in batch image {first} ({w}x{h} px): {missing[first]}{others}. Try: lower the "
            f"detection threshold{thresh}; a smaller or larger det_size{size}; lower min_size/min_score; pad or zoom "
            f"out very close-up photos; {other} backend; or set the no-face policy to 'skip' or 'pass-through'."
        )
    if missing and not kept and pol is NoFacePolicy.SKIP:
        first = min(missing)
        raise NoFaceError(
            f"{prefix}no usable face in any of the {len(batch_faces)} image(s) (image {first}: {missing[first]}), so "
            "on_no_face = 'skip' would leave nothing to output. Set on_no_face to 'pass-through' to keep the images "
            "unchanged, or give images with a face."
        )
    if pol is NoFacePolicy.SKIP:
        report.skipped = missing
    else:
        report.passed_through = missing
    if missing:
        logger.warning("no face in %d of %d image(s): %s", len(missing), len(batch_faces), report.summary())
    return kept, report
