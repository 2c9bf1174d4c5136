"""``create_analyzer``: one entry point for every face-analysis backend."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import LikenessError, MissingModelError
from .embedded import EmbeddedAnalyzer
from .insightface_backend import InsightFaceAnalyzer, find_insightface_pack
from .types import FaceAnalyzer

__all__ = ["create_analyzer", "BACKENDS"]

logger = logging.getLogger(__name__)

BACKENDS = ("embedded", "insightface", "auto")


def create_analyzer(
    backend: str = "embedded",
    models_root: str | Path | Sequence[str | Path] | None = None,
    providers: str | Sequence[str] | None = None,
    det_size: int = 640,
    det_thresh: float = 0.5,
    *,
    pack: str = "antelopev2",
    retry: bool = True,
    pad_retry: bool = True,
    landmarks68: bool = True,
    embeddings: bool = True,
    num_threads: int | None = None,
) -> FaceAnalyzer:
    """Build a face analyzer.

    Args:
        backend: ``"embedded"`` (default; yuface + optional dlib, offline, models from PyPI wheels),
            ``"insightface"`` (a local insightface pack; never downloads) or ``"auto"`` (insightface
            when the package and the pack are present, else embedded; the choice is logged).
        models_root: folder(s) of the ``insightface`` model key (each holding ``models/<pack>/``);
            default ``~/.insightface``. Ignored by the embedded backend.
        providers: ONNX Runtime providers for insightface: None/"cpu" (default), "auto", or a list.
        det_size: detector size in pixels (insightface: square input; embedded: longest side, max 960).
        det_thresh: minimum detection score in [0, 1].
        pack: insightface pack name (``"antelopev2"`` or ``"buffalo_l"``).
        retry: on no face, retry at smaller detector sizes (down to 320, step 64).
        pad_retry: then retry once on the image padded by 25 % per side (faces filling the frame).
        landmarks68: embedded only: compute iBUG 68 points (non-commercial model; False = CC0 models only).
        embeddings: embedded only: compute dlib 128-d embeddings during ``detect``.
        num_threads: embedded only: yuface OpenMP threads (None = its default).

    Returns:
        A :class:`FaceAnalyzer`; ``.detect(rgb_uint8_hwc)`` returns ``list[Face]``.

    Raises:
        LikenessError: unknown backend or missing package; MissingModelError: missing insightface pack.
    """
    backend = backend.lower().strip()
    if backend not in BACKENDS:
        raise LikenessError(f"Unknown face backend {backend!r}; choose one of {list(BACKENDS)}.")
    common = dict(det_size=det_size, det_thresh=det_thresh, retry=retry, pad_retry=pad_retry)
    if backend == "auto":
        reason = ""
        if importlib.util.find_spec("insightface") is None:
            reason = "the insightface package is not installed"
        else:
            try:
                find_insightface_pack(pack, models_root)
            except MissingModelError as exc:
                reason = f"pack '{pack}' not found ({str(exc).splitlines()[1].strip()} ...)"
        if not reason:
            logger.info("face backend auto -> insightface (pack %s)", pack)
            return InsightFaceAnalyzer(pack, models_root, providers, **common)
        logger.info("face backend auto -> embedded, because %s", reason)
        backend = "embedded"
    if backend == "insightface":
        return InsightFaceAnalyzer(pack, models_root, providers, **common)
    return EmbeddedAnalyzer(landmarks68=landmarks68, embeddings=embeddings, num_threads=num_threads, **common)
