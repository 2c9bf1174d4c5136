"""Face analysis: detection, landmarks, identity embeddings, face selection, no-face policy,
masks and an identity score.

Backends (see :func:`create_analyzer`):
  * ``embedded`` (default): yuface (BSD-3-Clause) + optional dlib (models CC0, except the
    68-point predictor: iBUG 300-W, non-commercial); offline, models from PyPI wheels.
  * ``insightface``: a local antelopev2/buffalo_l pack (non-commercial research licence); never
    downloads.

Heavy imports (dlib, insightface, onnxruntime) happen only when a backend is created.
"""

from .embedded import DLIB_EMBEDDING_MODEL, EmbeddedAnalyzer, dlib_available
from .factory import BACKENDS, create_analyzer
from .identity import (
    THRESHOLDS,
    IdentityScore,
    VerdictThresholds,
    cosine_similarity,
    identity_scores,
    identity_table,
    l2_distance,
    thresholds_for,
)
from .insightface_backend import InsightFaceAnalyzer, find_insightface_pack, resolve_providers
from .masks import REGIONS, batch_face_masks, face_mask, face_region_mask, part_masks
from .select import SELECTION_MODES, NoFacePolicy, PolicyReport, apply_policy, filter_faces, select_batch, select_faces
from .types import KPS_NAMES, Face, FaceAnalyzer

__all__ = [
    "Face",
    "FaceAnalyzer",
    "KPS_NAMES",
    "create_analyzer",
    "BACKENDS",
    "EmbeddedAnalyzer",
    "InsightFaceAnalyzer",
    "DLIB_EMBEDDING_MODEL",
    "dlib_available",
    "find_insightface_pack",
    "resolve_providers",
    "SELECTION_MODES",
    "NoFacePolicy",
    "PolicyReport",
    "filter_faces",
    "select_faces",
    "select_batch",
    "apply_policy",
    "REGIONS",
    "face_mask",
    "face_region_mask",
    "part_masks",
    "batch_face_masks",
    "VerdictThresholds",
    "THRESHOLDS",
    "thresholds_for",
    "cosine_similarity",
    "l2_distance",
    "IdentityScore",
    "identity_scores",
    "identity_table",
]
