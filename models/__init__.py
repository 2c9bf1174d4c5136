"""Pure PyTorch/NumPy core of Likeness. Never imports ComfyUI.

Importable both as ``<pack>.models`` (inside ComfyUI) and as top-level
``models`` (from the repository root, as external parity checks do), so every
import inside this package is relative and stays inside it.
"""

from .errors import CheckpointError, InputError, LikenessError, MissingModelError, NoFaceError

__all__ = ["LikenessError", "MissingModelError", "CheckpointError", "NoFaceError", "InputError"]
