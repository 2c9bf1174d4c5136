"""Face records and the analyzer interface.

Coordinates are pixels in the analysed image: ``x`` to the right, ``y`` down,
the centre of pixel ``(row r, column c)`` at ``(c, r)``. "Left"/"right" mean
the viewer's left/right (the person's right eye is the viewer's left eye).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LikenessError
from ..images import to_rgb_uint8

__all__ = ["Face", "FaceAnalyzer", "KPS_NAMES"]

logger = logging.getLogger(__name__)

#: Order of :attr:`Face.kps` (viewer's left/right), shared by every backend.
KPS_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


def _as_points(value: Any, n: int | None, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n):
        want = f"[{n},2]" if n is not None else "[N,2]"
        raise ValueError(f"Face.{what} must have shape {want} (x, y pixels); got {tuple(arr.shape)}")
    return arr


@dataclass
class Face:
    """One detected face.

    Attributes:
        bbox: float32 ``[4]`` box ``(x1, y1, x2, y2)`` in pixels.
        score: detector confidence in [0, 1].
        kps: float32 ``[5, 2]`` points in :data:`KPS_NAMES` order (eye viewer-left, eye viewer-right,
            nose tip, mouth corner viewer-left, mouth corner viewer-right).
        landmarks68: float32 ``[68, 2]`` iBUG 300-W points (jaw 0-16, brows 17-26, nose 27-35,
            eyes 36-47 with 36-41 the viewer-left eye, mouth 48-67) or ``None``.
        embedding: float32 ``[D]`` identity vector exactly as the recogniser returned it
            (not normalised) or ``None``.
        embedding_model: name of the recogniser that made ``embedding`` ("" when none); embeddings
            are only comparable between faces with the same ``embedding_model``.
        detector: name of the backend that found the face.
    """

    bbox: np.ndarray
    score: float
    kps: np.ndarray
    landmarks68: np.ndarray | None = None
    embedding: np.ndarray | None = None
    embedding_model: str = ""
    detector: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        box = np.asarray(self.bbox, dtype=np.float32).reshape(-1)
        if box.shape != (4,):
            raise ValueError(f"Face.bbox must be (x1, y1, x2, y2); got shape {tuple(np.shape(self.bbox))}")
        self.bbox = box
        self.score = float(self.score)
        self.kps = _as_points(self.kps, 5, "kps")
        if self.landmarks68 is not None:
            self.landmarks68 = _as_points(self.landmarks68, 68, "landmarks68")
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return float(self.bbox[3] - self.bbox[1])

    @property
    def size(self) -> float:
        """The shorter box side in pixels (what ``min_size`` filters compare against)."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        """Box area in square pixels (0 for degenerate boxes)."""
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        """Box centre ``[2]`` (x, y)."""
        return np.array([(self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2], dtype=np.float32)

    @property
    def normed_embedding(self) -> np.ndarray | None:
        """``embedding / ||embedding||`` (float32) or ``None``."""
        if self.embedding is None:
            return None
        norm = float(np.linalg.norm(self.embedding))
        return self.embedding / norm if norm > 0 else self.embedding.copy()

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Face:
        """A copy with every coordinate mapped by ``p * scale + (dx, dy)`` (embedding kept)."""
        off = np.array([dx, dy], dtype=np.float32)
        lm = None if self.landmarks68 is None else self.landmarks68 * scale + off
        return Face(
            bbox=self.bbox * scale + np.concatenate([off, off]),
            score=self.score,
            kps=self.kps * scale + off,
            landmarks68=lm,
            embedding=None if self.embedding is None else self.embedding.copy(),
            embedding_model=self.embedding_model,
            detector=self.detector,
            extra=dict(self.extra),
        )


class FaceAnalyzer(ABC):
    """Base of every face-analysis backend.

    Subclasses implement :meth:`_detect_once` (one detection pass at one detector size) and
    :meth:`embed`. :meth:`detect` adds input normalisation and the retry ladder: when nothing is
    found it tries the smaller sizes from :meth:`retry_sizes`, then (``pad_retry``) the image padded
    by 25 % on each side, which rescues faces that fill the whole frame.

    Attributes:
        name: backend name ("embedded", "insightface").
        embedding_model: name of the recogniser, or ``None`` when embeddings are unavailable.
        det_size: detector working size in pixels.
        det_thresh: minimum detector score in [0, 1].
    """

    name: str = "base"
    embedding_model: str | None = None

    def __init__(
        self, det_size: int = 640, det_thresh: float = 0.5, retry: bool = True, pad_retry: bool = True
    ) -> None:
        if not 0.0 <= det_thresh <= 1.0:
            raise LikenessError(f"det_thresh must be in [0, 1]; got {det_thresh}")
        if det_size < 64:
            raise LikenessError(f"det_size must be >= 64 pixels; got {det_size}")
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.retry = retry
        self.pad_retry = pad_retry

    def retry_sizes(self, height: int, width: int) -> list[int]:
        """Detector sizes to try in order: ``det_size``, then down to 320 in steps of 64 (if ``retry``)."""
        sizes = [self.det_size]
        if self.retry:
            sizes += [s for s in range(self.det_size - 64, 319, -64)]
        return sizes

    @abstractmethod
    def _detect_once(self, rgb: np.ndarray, det_size: int) -> list[Face]:
        """Detect faces in an RGB uint8 ``[H,W,3]`` image at one detector size."""

    @abstractmethod
    def embed(self, image: Any, face: Face) -> np.ndarray:
        """Identity embedding ``[D]`` float32 of ``face`` in ``image`` (not normalised)."""

    def detect(self, image: Any) -> list[Face]:
        """Detect every face in ``image`` (any layout :func:`to_rgb_uint8` accepts).

        Returns:
            Faces in detector order (usually by descending score); empty when none is found.
        """
        rgb = to_rgb_uint8(image)
        h, w = rgb.shape[:2]
        for i, size in enumerate(self.retry_sizes(h, w)):
            faces = self._detect_once(rgb, size)
            if faces:
                if i:
                    logger.info(
                        "face analysis (%s): found %d face(s) at det_size %d after retry", self.name, len(faces), size
                    )
                return faces
        if self.pad_retry:
            pad = max(h, w) // 4
            padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="constant")
            faces = [f.shifted(-pad, -pad) for f in self._detect_once(padded, self.det_size)]
            if faces:
                logger.info(
                    "face analysis (%s): found %d face(s) after padding the %dx%d image by %d px",
                    self.name,
                    len(faces),
                    w,
                    h,
                    pad,
                )
            return faces
        return []

    def detect_batch(self, images: Sequence[Any] | np.ndarray) -> list[list[Face]]:
        """:meth:`detect` for each image of a batch (``[B,H,W,C]`` array/tensor or a list)."""
        return [self.detect(images[i]) for i in range(len(images))]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(det_size={self.det_size}, det_thresh={self.det_thresh}, "
            f"embedding_model={self.embedding_model!r})"
        )
