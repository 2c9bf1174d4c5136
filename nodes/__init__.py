"""Thin ComfyUI V3 glue. Every node validates, calls ``models/``, and wraps the result.

Imported only by ``comfy_entrypoint`` (the package root), never at pack import time.
"""

from __future__ import annotations

from .compat import ComfyExtension, io  # first: refuses a ComfyUI that is too old, with a message
from .directions_nodes import LikenessLoadDirections
from .doctor_node import DOCTOR_NODES
from .editing_nodes import EDITING_NODES
from .face_nodes import FACE_NODES
from .inversion_nodes import INVERSION_NODES
from .refine_node import REFINE_NODES
from .wplus_file_nodes import WPLUS_FILE_NODES
from .wplus_nodes import WPLUS_NODES

__all__ = ["LikenessExtension", "NODES"]

NODES: list[type[io.ComfyNode]] = [
    *FACE_NODES,
    *INVERSION_NODES,
    *WPLUS_FILE_NODES,
    LikenessLoadDirections,
    *EDITING_NODES,
    *WPLUS_NODES,
    *REFINE_NODES,
    *DOCTOR_NODES,
]


class LikenessExtension(ComfyExtension):
    """Registers every Likeness node with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
