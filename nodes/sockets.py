"""Custom socket types of the Likeness nodes (the string is what workflows store)."""

from __future__ import annotations

from comfy_api.latest import io

WPlus = io.Custom("WPLUS")
"""models.wplus_codes.WPlusCodes: absolute W+ codes [B,18,512] + labels."""
Directions = io.Custom("DIRECTIONS")
"""models.directions.DirectionSet: named attribute directions."""
E4EModel = io.Custom("E4E_MODEL")
"""nodes.inversion_nodes.LoadedE4E: the e4e encoder (+ lazy StyleGAN2 decoder)."""
WPlusAdapterType = io.Custom("WPLUS_ADAPTER")
"""nodes.patching.LoadedWPlusAdapter."""
FaceAnalyzerType = io.Custom("FACE_ANALYZER")
"""models.face analyzer object (embedded or insightface backend)."""
Faces = io.Custom("FACES")
"""nodes.face_nodes.DetectedFaces: per image, the faces found (and the image sizes)."""
IdTokensType = io.Custom("SEFI_ID_TOKENS")
"""models.sefi.identity.SeFiIdentity: SeFi-IDE per-stage key/value ID tokens + provenance."""
