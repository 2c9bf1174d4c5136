"""Attribute editing in W+: edit with sliders, sweep, mix identities."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..models.directions import DirectionSet, Edit, edit, grid_sweep, mix, parse_strengths, resolve_rows, sweep
from ..models.errors import LikenessError
from ..models.inversion.codes import WPlusCodes
from ..models.preview.live import remember_wplus
from .sockets import Directions, WPlus

logger = logging.getLogger(__name__)

MAX_EDITS = 8
ROWS_TOOLTIP = (
    "W+ rows the edit touches: 'default' (the direction's own rows), 'all', 'coarse' (0-3: pose, face shape), "
    "'middle' (4-7: expression, hair), 'fine' (8-17: colour, texture), 'seeprettyface' (0-7), or a list like '0-3,8'."
)
STRENGTH_MIN, STRENGTH_MAX = -30.0, 30.0
GANSPACE_TOOLTIP = (
    "GANSpace directions only. 'offset': the slider moves the current coordinate (0 = no change). "
    "'set': the official w-plus-adapter rule, the slider SETS the coordinate in standard deviations (0 is not neutral)."
)


def _ganspace_input() -> io.Combo.Input:
    return io.Combo.Input(
        "ganspace_mode",
        options=["offset", "set"],
        default="offset",
        optional=True,
        advanced=True,
        tooltip=GANSPACE_TOOLTIP,
    )


def _slot_inputs(i: int) -> list:
    return [
        io.String.Input(
            f"attribute_{i}",
            default="",
            tooltip=f"Edit {i}: a direction name of the set (empty = unused). See the loader's info output.",
        ),
        io.Float.Input(
            f"strength_{i}",
            default=0.0,
            min=STRENGTH_MIN,
            max=STRENGTH_MAX,
            step=0.1,
            tooltip=f"Edit {i}: strength (0 = no change). Recommended ranges are listed in the loader's info output.",
        ),
        io.String.Input(f"rows_{i}", default="default", tooltip=ROWS_TOOLTIP),
    ]


def _edits_input() -> io.DynamicCombo.Input:
    """How many slider slots the node shows (1 to :data:`MAX_EDITS`); each slot is name, strength, rows."""
    options = [
        io.DynamicCombo.Option(str(n), [inp for i in range(1, n + 1) for inp in _slot_inputs(i)])
        for n in range(1, MAX_EDITS + 1)
    ]
    return io.DynamicCombo.Input(
        "edits",
        options=options,
        tooltip=f"Number of attribute sliders (1 to {MAX_EDITS}); more edits fit in 'extra_edits'.",
    )


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


def _requested(edits: dict, extra_edits: str) -> list[tuple[str, float, str]]:
    """``(name, strength, rows)`` of the filled slots, then of the extra lines."""
    requested = []
    for i in range(1, MAX_EDITS + 1):
        name = (edits.get(f"attribute_{i}") or "").strip()
        if name:
            requested.append((name, float(edits.get(f"strength_{i}", 0.0)), edits.get(f"rows_{i}") or "default"))
    return requested + parse_extra_edits(extra_edits or "")


def check_texts(rows: list[str | None] = (), strengths: list[str | None] = (), extra_edits: str | None = None):
    """``True`` or the first problem of the text inputs a node can check before the graph runs."""
    try:
        for spec in rows:
            if isinstance(spec, str) and _rows(spec) is not None:
                resolve_rows(_rows(spec))
        for text in strengths:
            if isinstance(text, str):
                parse_strengths(text)
        for _, _, spec in parse_extra_edits(extra_edits) if isinstance(extra_edits, str) else []:
            if _rows(spec) is not None:
                resolve_rows(_rows(spec))
    except LikenessError as exc:
        return str(exc)
    return True


class LikenessEditAttributes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_EditAttributes",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Edit Attributes",
            category="likeness/editing",
            search_aliases=["age", "smile", "pose", "glasses", "expression", "attribute slider", "face edit"],
            description=(
                "Moves an identity's W+ code along attribute directions (age, smile, pose, glasses, ...): "
                "w' = w + strength * direction on the chosen rows. Strength 0 leaves the code exactly unchanged. "
                "Edits apply in order and compose."
            ),
            inputs=[
                WPlus.Input("wplus", tooltip="The identity's W+ code(s), from Invert Face or Load W+."),
                Directions.Input("directions", tooltip="A direction set from Load Directions."),
                _edits_input(),
                io.String.Input(
                    "extra_edits",
                    default="",
                    multiline=True,
                    optional=True,
                    advanced=True,
                    tooltip="More edits, one per line: 'name strength [rows]', e.g. 'smile -1 0-7'.",
                ),
                _ganspace_input(),
            ],
            outputs=[
                WPlus.Output("wplus", tooltip="The edited W+ code(s), same batch as the input."),
                io.String.Output("summary", tooltip="The edits applied."),
            ],
        )

    @classmethod
    def validate_inputs(cls, edits: dict | None = None, extra_edits: str | None = None) -> bool | str:
        slots = edits or {}
        return check_texts(rows=[slots.get(f"rows_{i}") for i in range(1, MAX_EDITS + 1)], extra_edits=extra_edits)

    @classmethod
    def execute(
        cls, wplus: WPlusCodes, directions: DirectionSet, edits: dict, extra_edits: str = "", ganspace_mode="offset"
    ) -> io.NodeOutput:
        requested = _requested(edits, extra_edits)
        chosen = [Edit(directions[name], strength, _rows(rows)) for name, strength, rows in requested]
        codes = edit(wplus.codes, chosen, ganspace_mode=ganspace_mode) if chosen else wplus.codes
        summary = ", ".join(f"{n} {s:+g} (rows {r})" for n, s, r in requested) or "no edits"
        out = wplus.with_codes(codes, wplus.labels, edits=summary)
        return io.NodeOutput(out, summary, ui=ui.PreviewText(summary))


class LikenessAttributeSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_AttributeSweep",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Attribute Sweep",
            category="likeness/editing",
            search_aliases=["age", "smile", "attribute sweep", "strip", "grid", "aging"],
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
                    "strengths_b",
                    default="-1,0,1",
                    optional=True,
                    advanced=True,
                    tooltip="Strengths of the second direction.",
                ),
                io.String.Input("rows_b", default="default", optional=True, advanced=True, tooltip=ROWS_TOOLTIP),
                _ganspace_input(),
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
    def validate_inputs(
        cls, strengths: str | None = None, rows: str | None = None, strengths_b: str | None = None, rows_b=None
    ) -> bool | str:
        return check_texts(rows=[rows, rows_b], strengths=[strengths, strengths_b])

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
        values = parse_strengths(strengths)
        if attribute_b and attribute_b.strip():
            dir_b, values_b = directions[attribute_b.strip()], parse_strengths(strengths_b)
            result = grid_sweep(
                wplus.codes, dir_a, values, dir_b, values_b, _rows(rows), _rows(rows_b), ganspace_mode=ganspace_mode
            )
        else:
            result = sweep(wplus.codes, dir_a, values, _rows(rows), ganspace_mode=ganspace_mode)
        out = wplus.with_codes(result.wplus, tuple(result.labels), sweep=attribute)
        labels = "\n".join(result.labels)
        return io.NodeOutput(out, labels, out.batch, ui=ui.PreviewText(labels))


class LikenessMixIdentities(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_MixIdentities",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Mix Identities",
            category="likeness/editing",
            search_aliases=["identity mix", "face blend", "expression transfer", "morph faces"],
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
    def validate_inputs(cls, rows: str | None = None) -> bool | str:
        return check_texts(rows=[rows])

    @classmethod
    def execute(cls, wplus_a: WPlusCodes, wplus_b: WPlusCodes, alpha: float, rows: str) -> io.NodeOutput:
        codes = mix(wplus_a.codes, wplus_b.codes, alpha=alpha, rows=_rows(rows) or "all")
        out = wplus_a.with_codes(codes, wplus_a.labels, mixed_with=wplus_b.meta.get("source", "B"), mix_rows=rows)
        remember_wplus(cls.hidden.unique_id, "Likeness_MixIdentities", out)  # the live preview may start from it
        text = f"{out.batch} code(s): A with B on rows {rows} at alpha {alpha:g}"
        return io.NodeOutput(out, ui=ui.PreviewText(text))


EDITING_NODES = [LikenessEditAttributes, LikenessAttributeSweep, LikenessMixIdentities]
