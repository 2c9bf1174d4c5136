"""insightface backend (SCRFD detection + ArcFace embeddings) from a local model pack.

A pack is ``<root>/models/<name>/*.onnx`` (``antelopev2``: scrfd_10g + glintr100; ``buffalo_l``:
det_10g + w600k_r50). ``root`` is a folder of the ``insightface`` model folder key. Likeness never
lets insightface download: the folder is checked *before* ``FaceAnalysis`` is constructed, and a
missing or misplaced pack raises :class:`MissingModelError` naming the exact expected path.

The pretrained insightface packs are licensed for **non-commercial research only**.
Works with insightface 2.x and 0.7.3 (``FaceAnalysis(name, root, providers, allowed_modules)``,
``prepare(ctx_id, det_thresh, det_size)``, ``get(bgr)``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, LikenessError, MissingModelError
from ..files.registry import MODEL_FILES
from ..images import to_rgb_uint8
from .types import Face, FaceAnalyzer

__all__ = ["InsightFaceAnalyzer", "find_insightface_pack", "resolve_providers", "INSIGHTFACE_INSTALL_HINT"]

logger = logging.getLogger(__name__)

INSIGHTFACE_INSTALL_HINT = 'pip install "insightface>=2.1,<3"  (run it with the Python that runs ComfyUI)'
DEFAULT_MODULES = ("detection", "recognition", "landmark_3d_68")


def _as_roots(models_root: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if models_root is None:
        return [Path("~/.insightface").expanduser()]
    if isinstance(models_root, (str, Path)):
        return [Path(models_root).expanduser()]
    return [Path(p).expanduser() for p in models_root]


def _onnx_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.onnx") if p.is_file()) if folder.is_dir() else []


def find_insightface_pack(name: str, models_root: str | Path | Sequence[str | Path] | None = None) -> Path:
    """Return ``<root>/models/<name>`` for the first root that holds ``.onnx`` files there.

    Args:
        name: pack name, e.g. ``"antelopev2"`` or ``"buffalo_l"``.
        models_root: one or more folders of the ``insightface`` model key (each containing
            ``models/<name>/``), searched in order. Default ``~/.insightface``.

    Raises:
        MissingModelError: naming every expected path, what was found instead (a nested
            ``models/<name>/<name>/`` folder, a pack directly in ``<root>/<name>``, an empty folder)
            and where to get the pack. Never downloads.
    """
    roots = _as_roots(models_root)
    notes: list[str] = []
    for root in roots:
        pack = root / "models" / name
        if _onnx_files(pack):
            return pack
        nested = pack / name
        if _onnx_files(nested):
            notes.append(f"{nested} holds the .onnx files one folder too deep: move them up into {pack}")
        elif pack.is_dir():
            notes.append(f"{pack} exists but holds no .onnx files")
        if _onnx_files(root / name):
            notes.append(
                f"{root / name} holds the .onnx files, but the pack must sit in {pack} (add the 'models' folder)"
            )
    known = [m for m in MODEL_FILES if m.folder == "insightface" and m.filename == f"models/{name}"]
    src = f"\nGet it from: {known[0].source}\nLicence: {known[0].licence}" if known else ""
    expected = "\n".join(
        f"  - {r / 'models' / name}{'' if r.is_dir() else '   (root folder does not exist)'}" for r in roots
    )
    found = ("\nFound instead:\n" + "\n".join(f"  - {n}" for n in notes)) if notes else ""
    raise MissingModelError(
        f"insightface model pack '{name}' not found. Expected its .onnx files directly in one "
        f"of:\n{expected}{found}{src}\n"
        "Likeness never downloads it. Unzip the pack so that <insightface folder>/models/"
        f"{name}/*.onnx exists (no extra nested folder), or use the 'embedded' backend, which needs no download."
    )


def resolve_providers(providers: str | Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime providers: ``None``/``"cpu"`` -> CPU; ``"auto"`` -> best available + CPU; or an explicit list.

    Raises:
        LikenessError: when a requested provider is not in ``onnxruntime.get_available_providers()``.
    """
    import onnxruntime

    available = list(onnxruntime.get_available_providers())
    if providers is None or providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "auto":
        for pref in (
            "CUDAExecutionProvider",
            "ROCMExecutionProvider",
            "CoreMLExecutionProvider",
            "DmlExecutionProvider",
        ):
            if pref in available:
                return [pref, "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    chosen = [providers] if isinstance(providers, str) else list(providers)
    missing = [p for p in chosen if p not in available]
    if missing:
        raise LikenessError(
            f"ONNX Runtime provider(s) {missing} are not available; this onnxruntime offers {available}. "
            "For CUDA: pip uninstall -y onnxruntime && pip install onnxruntime-gpu (or use providers='cpu')."
        )
    return chosen


class InsightFaceAnalyzer(FaceAnalyzer):
    """Face analysis with an insightface model pack (SCRFD + ArcFace, optional 3D-68 landmarks).

    Args:
        pack: pack name (``"antelopev2"``, ``"buffalo_l"``).
        models_root: folder(s) of the ``insightface`` model key; see :func:`find_insightface_pack`.
        providers: see :func:`resolve_providers` (CPU by default).
        det_size: square SCRFD input size; on no face the detector retries down to 320 in steps of 64.
        det_thresh: minimum detection score in [0, 1].
        allowed_modules: insightface task names to load (default detection, recognition, landmark_3d_68).
    """

    name = "insightface"

    def __init__(
        self,
        pack: str = "antelopev2",
        models_root: str | Path | Sequence[str | Path] | None = None,
        providers: str | Sequence[str] | None = None,
        det_size: int = 640,
        det_thresh: float = 0.5,
        *,
        allowed_modules: Sequence[str] = DEFAULT_MODULES,
        retry: bool = True,
        pad_retry: bool = True,
    ) -> None:
        super().__init__(det_size=det_size, det_thresh=det_thresh, retry=retry, pad_retry=pad_retry)
        self.pack = pack
        self.pack_dir = find_insightface_pack(pack, models_root)  # guard: raises before insightface is touched
        if importlib.util.find_spec("insightface") is None:
            raise LikenessError(f"The insightface backend needs the insightface package: {INSIGHTFACE_INSTALL_HINT}")
        from insightface.app import FaceAnalysis

        self.providers = resolve_providers(providers)
        self.ctx_id = -1 if self.providers[0] == "CPUExecutionProvider" else 0
        files = [p.name for p in _onnx_files(self.pack_dir)]
        try:
            # An absolute folder as `name` makes 2.x use it directly and 0.7.3 resolve
            # os.path.join(root, "models", <absolute>) to the same folder: no download path either way.
            self.app = FaceAnalysis(
                name=str(self.pack_dir.resolve()),
                root=str(self.pack_dir.parent.parent),
                providers=self.providers,
                allowed_modules=list(allowed_modules),
            )
        except AssertionError as exc:  # insightface asserts 'detection' in self.models
            raise CheckpointError(
                f"insightface pack {self.pack_dir} has no usable face detector among {files}. "
                "Expected an SCRFD/RetinaFace .onnx (e.g. scrfd_10g_bnkps.onnx or det_10g.onnx); the pack may be "
                "incomplete."
            ) from exc
        rec = self.app.models.get("recognition")
        self.embedding_model = f"{pack}/{Path(rec.model_file).name}" if rec is not None else None
        if rec is None:
            logger.warning(
                "insightface pack %s has no recognition model among %s: faces get no embedding", self.pack_dir, files
            )
        self._prepared_size: int | None = None
        logger.info(
            "insightface backend: pack %s, providers %s, modules %s",
            self.pack_dir,
            self.providers,
            sorted(self.app.models),
        )

    def _prepare(self, det_size: int) -> None:
        if self._prepared_size != det_size:
            self.app.prepare(ctx_id=self.ctx_id, det_thresh=self.det_thresh, det_size=(det_size, det_size))
            self._prepared_size = det_size

    def _convert(self, f: Any) -> Face:
        lm3d = getattr(f, "landmark_3d_68", None)
        emb = getattr(f, "embedding", None)
        kps = f.kps if f.kps is not None else np.zeros((5, 2), np.float32)
        return Face(
            bbox=np.asarray(f.bbox, dtype=np.float32),
            score=float(f.det_score),
            kps=kps,
            landmarks68=None if lm3d is None else np.asarray(lm3d)[:, :2],
            embedding=None if emb is None else np.array(emb, dtype=np.float32),
            embedding_model=self.embedding_model if emb is not None else "",
            detector=f"insightface:{self.pack}",
        )

    def _detect_once(self, rgb: np.ndarray, det_size: int) -> list[Face]:
        self._prepare(det_size)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return [self._convert(f) for f in self.app.get(bgr)]

    def embed(self, image: Any, face: Face) -> np.ndarray:
        """ArcFace embedding ``[512]`` float32 (not normalised) of ``face``, aligned on its 5 points."""
        rec = self.app.models.get("recognition")
        if rec is None:
            raise LikenessError(
                f"insightface pack {self.pack_dir} has no recognition model: add the ArcFace .onnx (e.g. "
                f"glintr100.onnx)."
            )
        from insightface.app.common import Face as InsightFace

        self._prepare(self._prepared_size or self.det_size)
        bgr = np.ascontiguousarray(to_rgb_uint8(image)[:, :, ::-1])
        f = InsightFace(bbox=face.bbox, kps=face.kps, det_score=face.score)
        return np.array(rec.get(bgr, f), dtype=np.float32).reshape(-1)
