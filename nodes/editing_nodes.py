"""Attribute editing in W+: load a direction set, edit with sliders, sweep, mix identities."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..models.directions import DirectionSet, Edit, edit, grid_sweep, mix, parse_strengths, rows_to_str, sweep
from ..models.directions.discovery import discover_directions
from ..models.errors import LikenessError
from ..models.inversion.codes import WPlusCodes
from ..models.preview.live import remember_wplus
from .folders import search_paths
from .sockets import Directions, WPlus
from .ui_output import node_ui

logger = logging.getLogger(__name__)

EDIT_SLOTS = 4
ROWS_TOOLTIP = (
    "W+ rows the edit touches: 'default' (the direction's own rows), 'all', 'coarse' (0-3: pose, face shape), "
    "'middle' (4-7: expression, hair), 'fine' (8-17: colour, texture), 'seeprettyface' (0-7), or a list like '0-3,8'."
)
STRENGTH_MIN, STRENGTH_MAX = -30.0, 30.0
GANSPACE_TOOLTIP = (
    "GANSpace directions only. 'offset': the slider moves the current coordinate (0 = no change). "
    "'set': the official w-plus-adapter rule, the slider SETS the coordinate in standard deviations (0 is not neutral)."
)


def _catalog():
    return discover_directions(search_paths()["likeness_directions"])


def _set_names() -> list[str]:
    names = list(_catalog().sets)
    return names or ["(no direction files found: see the Likeness Doctor node)"]


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
        return io.Schema(
            node_id="Likeness_LoadDirections",
            display_name="Likeness Load Directions",
            category="likeness/editing",
            description=(
                "Loads a set of attribute directions (age, smile, pose, ...) from models/likeness_directions. "
                "Licences differ per set: encoder4editing, InterFaceGAN and PreciseControl are MIT; the w-plus-adapter "
                "configs are S-Lab NON-COMMERCIAL and seeprettyface latent_directions are Nvidia NON-COMMERCIAL."
            ),
            inputs=[
                io.Combo.Input(
                    "direction_set",
                    options=_set_names(),
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
    def execute(cls, direction_set: str) -> io.NodeOutput:
        catalog = _catalog()
        if direction_set not in catalog.sets:
            raise LikenessError(
                f"Direction set {direction_set!r} was not found. Available: {', '.join(catalog.sets) or 'none'}. "
                "Put the direction files in models/likeness_directions (see README, 'Directions') and refresh."
            )
        ds = catalog.sets[direction_set]
        info = describe_set(ds)
        if catalog.problems:
            info += "\n\nUnusable files in the folder:\n" + "\n".join(
                f"  {p.path}: {p.reason}" for p in catalog.problems
            )
        return io.NodeOutput(ds, info, ui=ui.PreviewText(info))


def _slot_inputs(i: int) -> list:
    return [
        io.String.Input(
            f"attribute_{i}",
            default="",
            optional=True,
            tooltip=f"Edit {i}: a direction name of the set (empty = unused). See the loader's info output.",
        ),
        io.Float.Input(
            f"strength_{i}",
            default=0.0,
            min=STRENGTH_MIN,
            max=STRENGTH_MAX,
            step=0.1,
            optional=True,
            tooltip=f"Edit {i}: strength (0 = no change). Recommended ranges are listed in the loader's info output.",
        ),
        io.String.Input(f"rows_{i}", default="default", optional=True, tooltip=ROWS_TOOLTIP),
    ]


def parse_extra_edits(text: str) -> list[tuple[str, float, str]]:
    """Lines ``name strength [rows]`` (e.g. ``age +3 0-7``); ``#`` starts a comment."""
    edits = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ").split()
        try:
            edits.append((parts[0], float(parts[1]), parts[2] if len(parts) > 2 else "default"))
        except (IndexError, ValueError):
            raise LikenessError(
                f"extra_edits line {n} {raw!r}: write 'name strength [rows]', e.g. 'smile -1 0-7'."
            ) from None
    return edits


def _rows(spec: str):
    spec = (spec or "default").strip()
    return None if spec == "default" else spec


class LikenessEditAttributes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        slots = [inp for i in range(1, EDIT_SLOTS + 1) for inp in _slot_inputs(i)]
        return io.Schema(
            node_id="Likeness_EditAttributes",
            display_name="Likeness Edit Attributes",
            category="likeness/editing",
            description=(
                "Moves an identity's W+ code along attribute directions (age, smile, pose, glasses, ...): "
                "w' = w + strength * direction on the chosen rows. Strength 0 leaves the code exactly unchanged. "
                "Edits apply in order and compose."
            ),
            inputs=[
                WPlus.Input("wplus", tooltip="The identity's W+ code(s), from Invert Face or Load W+."),
                Directions.Input("directions", tooltip="A direction set from Load Directions."),
                *slots,
                io.String.Input(
                    "extra_edits",
                    default="",
                    multiline=True,
                    optional=True,
                    tooltip="More edits, one per line: 'name strength [rows]', e.g. 'smile -1 0-7'.",
                ),
                io.Combo.Input(
                    "ganspace_mode",
                    options=["offset", "set"],
                    default="offset",
                    optional=True,
                    tooltip=GANSPACE_TOOLTIP,
                ),
            ],
            outputs=[
                WPlus.Output("wplus", tooltip="The edited W+ code(s), same batch as the input."),
                io.String.Output("summary", tooltip="The edits applied."),
            ],
        )

    @classmethod
    def execute(
        cls, wplus: WPlusCodes, directions: DirectionSet, extra_edits: str = "", ganspace_mode: str = "offset", **slots
    ) -> io.NodeOutput:
        requested = []
        for i in range(1, EDIT_SLOTS + 1):
            name = (slots.get(f"attribute_{i}") or "").strip()
            if name:
                requested.append((name, float(slots.get(f"strength_{i}", 0.0)), slots.get(f"rows_{i}", "default")))
        requested += parse_extra_edits(extra_edits or "")
        edits = [Edit(directions[name], strength, _rows(rows)) for name, strength, rows in requested]
        codes = edit(wplus.codes, edits, ganspace_mode=ganspace_mode) if edits else wplus.codes
        summary = ", ".join(f"{n} {s:+g} (rows {r})" for n, s, r in requested) or "no edits"
        out = wplus.with_codes(codes, wplus.labels, edits=summary)
        return io.NodeOutput(out, summary, ui=ui.PreviewText(summary))


class LikenessAttributeSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_AttributeSweep",
            display_name="Likeness Attribute Sweep",
            category="likeness/editing",
            description=(
                "One attribute over a list of strengths (or a grid over two attributes) as one W+ batch with labels. "
                "Feed it to Apply W+ Adapter with a latent batch of the same size to render an age/smile strip in one "
                "KSampler run. Order: attribute A outer, B inner; deterministic."
            ),
            inputs=[
                WPlus.Input("wplus", tooltip="The identity's W+ code (a batch sweeps every code)."),
                Directions.Input("directions", tooltip="A direction set from Load Directions."),
                io.String.Input("attribute", default="age", tooltip="Direction to sweep (name in the set)."),
                io.String.Input(
                    "strengths", default="-4:4:2", tooltip="'start:stop:step' (stop included) or a list '-2,0,2'."
                ),
                io.String.Input("rows", default="default", tooltip=ROWS_TOOLTIP),
                io.String.Input(
                    "attribute_b",
                    default="",
                    optional=True,
                    tooltip="Optional second direction: makes a grid (empty = a strip).",
                ),
                io.String.Input(
                    "strengths_b", default="-1,0,1", optional=True, tooltip="Strengths of the second direction."
                ),
                io.String.Input("rows_b", default="default", optional=True, tooltip=ROWS_TOOLTIP),
                io.Combo.Input(
                    "ganspace_mode",
                    options=["offset", "set"],
                    default="offset",
                    optional=True,
                    tooltip=GANSPACE_TOOLTIP,
                ),
            ],
            outputs=[
                WPlus.Output(
                    "wplus",
                    tooltip="W+ batch, one code per sweep point (use an Empty Latent Image of this batch size).",
                ),
                io.String.Output("labels", tooltip="One label per batch item, e.g. 'age=+2.0', in batch order."),
                io.Int.Output("batch_size", tooltip="Number of sweep points: set the latent batch to this."),
            ],
        )

    @classmethod
    def execute(
        cls,
        wplus: WPlusCodes,
        directions: DirectionSet,
        attribute: str,
        strengths: str,
        rows: str,
        attribute_b: str = "",
        strengths_b: str = "-1,0,1",
        rows_b: str = "default",
        ganspace_mode: str = "offset",
    ) -> io.NodeOutput:
        dir_a = directions[attribute.strip()]
        if attribute_b and attribute_b.strip():
            result = grid_sweep(
                wplus.codes,
                dir_a,
                parse_strengths(strengths),
                directions[attribute_b.strip()],
                parse_strengths(strengths_b),
                _rows(rows),
                _rows(rows_b),
                ganspace_mode=ganspace_mode,
            )
        else:
            result = sweep(wplus.codes, dir_a, parse_strengths(strengths), _rows(rows), ganspace_mode=ganspace_mode)
        out = wplus.with_codes(result.wplus, tuple(result.labels), sweep=attribute)
        labels = "\n".join(result.labels)
        return io.NodeOutput(out, labels, out.batch, ui=ui.PreviewText(labels))


class LikenessMixIdentities(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_MixIdentities",
            display_name="Likeness Mix Identities",
            category="likeness/editing",
            description=(
                "Mixes two W+ codes: on the chosen rows w = lerp(A, B, alpha), other rows from A. alpha 1 on 'middle' "
                "rows takes the expression of B onto the identity of A; 'all' with 0.5 averages two faces."
            ),
            inputs=[
                WPlus.Input("wplus_a", tooltip="Identity A (kept on the rows not mixed)."),
                WPlus.Input("wplus_b", tooltip="Identity B (a single code, or one per code of A)."),
                io.Float.Input(
                    "alpha",
                    default=1.0,
                    min=-1.0,
                    max=2.0,
                    step=0.05,
                    tooltip="0 = A, 1 = B on the chosen rows; outside 0..1 extrapolates.",
                ),
                io.String.Input("rows", default="middle", tooltip=ROWS_TOOLTIP),
            ],
            outputs=[WPlus.Output("wplus", tooltip="The mixed W+ code(s).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, wplus_a: WPlusCodes, wplus_b: WPlusCodes, alpha: float, rows: str) -> io.NodeOutput:
        codes = mix(wplus_a.codes, wplus_b.codes, alpha=alpha, rows=_rows(rows) or "all")
        out = wplus_a.with_codes(codes, wplus_a.labels, mixed_with=wplus_b.meta.get("source", "B"), mix_rows=rows)
        remember_wplus(cls.hidden.unique_id, "Likeness_MixIdentities", out)
        text = f"{out.batch} code(s): A with B on rows {rows} at alpha {alpha:g}"
        return io.NodeOutput(out, ui=node_ui(cls, text))


EDITING_NODES = [LikenessLoadDirections, LikenessEditAttributes, LikenessAttributeSweep, LikenessMixIdentities]
