"""Custom socket types of the Likeness nodes (the string is what workflows store)."""

from __future__ import annotations

from comfy_api.latest import io

WPlus = io.Custom("WPLUS")
"""models.inversion.codes.WPlusCodes: absolute W+ codes [B,18,512] + labels."""
Directions = io.Custom("DIRECTIONS")
"""models.directions.DirectionSet: named attribute directions."""
E4EModel = io.Custom("E4E_MODEL")
"""nodes.e4e_runtime.LoadedE4E: the e4e encoder (+ lazy StyleGAN2 decoder) and its ModelPatchers."""
WPlusAdapterType = io.Custom("WPLUS_ADAPTER")
"""nodes.patching.wplus.LoadedWPlusAdapter: the adapter weights and their ModelPatcher."""
FaceAnalyzerType = io.Custom("FACE_ANALYZER")
"""models.face analyzer object (embedded or insightface backend)."""
Faces = io.Custom("FACES")
"""nodes.face_common.DetectedFaces: per image, the faces found (and the image sizes)."""
