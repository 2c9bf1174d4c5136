"""Save and load identities: W+ codes as ``.safetensors`` with their provenance."""

from __future__ import annotations

from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..models.files.registry import find_file
from ..models.inversion.codes import WPlusCodes, load_wplus, sanitize_prefix, save_wplus
from ..models.preview.live import remember_wplus
from .checks import node_id, wplus_in
from .folders import file_choices, search_paths, validate_file
from .sockets import WPlus
from .ui_output import node_ui

__all__ = ["WPLUS_SUBFOLDER", "sanitize_prefix", "WPLUS_FILE_NODES"]

#: Save W+ writes into ``output/likeness_wplus``; that folder is also a search path of Load W+.
WPLUS_SUBFOLDER = "likeness_wplus"


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
                WPlus.Input(
                    "wplus", tooltip="W+ codes to save (items without a code, from images with no face, are left out)."
                ),
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
        given = wplus_in(cls, "wplus", wplus)
        wplus = given.only_present("Save W+ input 'wplus'")
        prefix = f"{WPLUS_SUBFOLDER}/{sanitize_prefix(filename_prefix)}"
        folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = save_wplus(Path(folder) / f"{name}_{counter:05}_.safetensors", wplus)
        text = f"saved {path}\n({wplus.batch} code(s): {', '.join(wplus.labels)})"
        warning = None
        if given.absent:
            missing = ", ".join(given.labels[i] for i in given.absent)
            warning = f"not saved, no code (no face): {missing}"
        return io.NodeOutput(str(path), ui=node_ui(cls, text, warning=warning))


class LikenessLoadWPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadWPlus",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Load W+",
            category="likeness/inversion",
            search_aliases=["load identity", "identity", "load w+", "load face code"],
            description="Loads W+ codes saved by Save W+ (or an official [1,18,512] .pth code) from "
            "models/likeness_wplus or output/likeness_wplus.",
            inputs=[
                io.Combo.Input(
                    "wplus_name",
                    options=file_choices("likeness_wplus"),
                    tooltip="A saved W+ file.",
                )
            ],
            outputs=[WPlus.Output("wplus", tooltip="The loaded W+ codes.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, wplus_name: str) -> bool | str:
        return validate_file("likeness_wplus", wplus_name)

    @classmethod
    def execute(cls, wplus_name: str) -> io.NodeOutput:
        wplus = load_wplus(find_file("likeness_wplus", wplus_name, search_paths()))
        remember_wplus(node_id(cls), "Likeness_LoadWPlus", wplus)  # the live preview starts from it
        meta = ", ".join(f"{k}: {v}" for k, v in wplus.meta.items() if k in ("file", "recipe", "model"))
        return io.NodeOutput(wplus, ui=node_ui(cls, f"{wplus.batch} code(s): {', '.join(wplus.labels)}\n{meta}"))


WPLUS_FILE_NODES = [LikenessSaveWPlus, LikenessLoadWPlus]
