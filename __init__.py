"""Likeness: identity-preserving, attribute-controllable faces for ComfyUI.

This file is ComfyUI's entry point. It imports nothing from ComfyUI at module
import time, so the package (and ``models/``) can be imported without it.
"""

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]


async def comfy_entrypoint():
    """Called by ComfyUI's V3 loader: register model folders and HTTP routes, return the extension."""
    from .nodes import LikenessExtension
    from .nodes.folders import register_model_folders
    from .nodes.routes import register_routes

    register_model_folders()
    register_routes()
    return LikenessExtension()
