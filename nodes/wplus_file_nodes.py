"""Save and load identities: W+ codes as ``.safetensors`` with their provenance."""

from __future__ import annotations

import re
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..models.files.registry import find_file
from ..models.inversion.codes import WPlusCodes, load_wplus, save_wplus
from .folders import file_list, search_paths
from .sockets import WPlus

__all__ = ["WPLUS_SUBFOLDER", "sanitize_prefix", "WPLUS_FILE_NODES"]

#: Save W+ writes into ``output/likeness_wplus``; that folder is also a search path of Load W+.
WPLUS_SUBFOLDER = "likeness_wplus"
_UNSAFE = re.compile(r"[^\w.\- %]+")


def sanitize_prefix(prefix: str) -> str:
    """A relative ``sub/folders/name`` prefix: unsafe characters become ``_``, ``.``/``..``/empty parts go."""
    parts = [_UNSAFE.sub("_", p).strip(" .") for p in prefix.replace("\\", "/").split("/")]
    parts = [p for p in parts if p]
    return "/".join(parts) or "identity"


class LikenessSaveWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_SaveWPlus",
            display_name="Likeness Save W+",
            category="likeness/inversion",
            search_aliases=["save identity", "identity", "save w+", "save face code"],
            description="Saves W+ codes with their labels and provenance (source image hash, recipe, model) as "
            ".safetensors in output/likeness_wplus: a reusable, shareable identity.",
            inputs=[
                WPlus.Input("wplus", tooltip="W+ codes to save."),
                io.String.Input(
                    "filename_prefix",
                    default="identity",
                    tooltip="File name prefix inside output/likeness_wplus (sub/folders allowed); a counter is "
                    "appended as ComfyUI's Save Image does.",
                ),
            ],
            outputs=[io.String.Output("path", tooltip="The file written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, wplus: WPlusCodes, filename_prefix: str) -> io.NodeOutput:
        prefix = f"{WPLUS_SUBFOLDER}/{sanitize_prefix(filename_prefix)}"
        folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = save_wplus(Path(folder) / f"{name}_{counter:05}_.safetensors", wplus)
        return io.NodeOutput(str(path), ui=ui.PreviewText(f"saved {path}"))


class LikenessLoadWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadWPlus",
            display_name="Likeness Load W+",
            category="likeness/inversion",
            search_aliases=["load identity", "identity", "load w+", "load face code"],
            description="Loads W+ codes saved by Save W+ (or an official [1,18,512] .pth code) from "
            "models/likeness_wplus or output/likeness_wplus.",
            inputs=[
                io.Combo.Input(
                    "wplus_name",
                    options=file_list("likeness_wplus") or ["identity_00001_.safetensors"],
                    tooltip="A saved W+ file.",
                )
            ],
            outputs=[WPlus.Output("wplus", tooltip="The loaded W+ codes.")],
        )

    @classmethod
    def execute(cls, wplus_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_wplus(find_file("likeness_wplus", wplus_name, search_paths())))


WPLUS_FILE_NODES = [LikenessSaveWPlus, LikenessLoadWPlus]
