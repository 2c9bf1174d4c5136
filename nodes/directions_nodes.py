"""``Likeness Load Directions``: a set of attribute directions from models/likeness_directions."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..models.directions import DirectionSet, rows_to_str
from ..models.directions.index import cached_catalog, set_names
from ..models.errors import LikenessError
from .folders import search_paths
from .sockets import Directions

__all__ = ["LikenessLoadDirections", "describe_set", "NO_SETS"]

NO_SETS = "(no direction files found: see the Likeness Doctor node)"


def _folders() -> list:
    return search_paths()["likeness_directions"]


def describe_set(ds: DirectionSet) -> str:
    """One line per direction: name, recommended range, default rows; then the licence."""
    lines = [f"{ds.name}  ({len(ds.directions)} directions; licence: {ds.licence})"]
    for name, d in ds.directions.items():
        lo, hi = d.recommended_range
        lines.append(f"  {name:24s} range {lo:+g}..{hi:+g}  rows {rows_to_str(d.default_rows)}  [{d.kind}]")
    if ds.note:
        lines.append(ds.note)
    return "\n".join(lines)


class LikenessLoadDirections(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # set_names reads no file: it lists the cached catalogue, or the names the folder layout predicts
        return io.Schema(
            node_id="Likeness_LoadDirections",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Load Directions",
            category="likeness/editing",
            search_aliases=["age", "smile", "pose", "attribute directions", "interfacegan", "ganspace", "latent edit"],
            description=(
                "Loads a set of attribute directions (age, smile, pose, ...) from models/likeness_directions. "
                "Licences differ per set: encoder4editing, InterFaceGAN and PreciseControl are MIT; the w-plus-adapter "
                "configs are S-Lab NON-COMMERCIAL and seeprettyface latent_directions are Nvidia NON-COMMERCIAL."
            ),
            inputs=[
                io.Combo.Input(
                    "direction_set",
                    options=set_names(_folders()) or [NO_SETS],
                    tooltip="A direction set found in models/likeness_directions (subfolders allowed).",
                ),
            ],
            outputs=[
                Directions.Output(
                    "directions", tooltip="The named directions, for Edit Attributes and Attribute Sweep."
                ),
                io.String.Output(
                    "info", tooltip="Each direction with its recommended strength range, rows and the set's licence."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, direction_set: str) -> bool | str:
        """Checked against the files (cached by folder mtimes), so a name the layout predicted is confirmed."""
        catalog = cached_catalog(_folders())
        if direction_set in catalog.sets:
            return True
        return (
            f"Direction set {direction_set!r} was not found. Available: {', '.join(catalog.sets) or 'none'}. "
            "Put the direction files in models/likeness_directions (see README, 'Attribute directions') and refresh."
        )

    @classmethod
    def execute(cls, direction_set: str) -> io.NodeOutput:
        catalog = cached_catalog(_folders())
        if direction_set not in catalog.sets:
            raise LikenessError(cls.validate_inputs(direction_set))
        ds = catalog.sets[direction_set]
        info = describe_set(ds)
        if catalog.problems:
            info += "\n\nUnusable files in the folder:\n" + "\n".join(
                f"  {p.path}: {p.reason}" for p in catalog.problems
            )
        return io.NodeOutput(ds, info, ui=ui.PreviewText(info))
