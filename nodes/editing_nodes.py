"""Attribute editing in W+: edit with sliders, sweep, mix identities."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..models.directions import DirectionSet, Edit, edit, grid_sweep, mix, sweep
from ..models.errors import LikenessError
from ..models.inversion.codes import WPlusCodes
from ..models.preview.live import remember_wplus
from ..models.validation import check_sweep_size, check_wplus, parse_edit_lines, parse_strengths
from .checks import check_widgets, first_problem, node_id, wplus_in
from .editing_inputs import (
    LOWER,
    MAX_EDITS,
    ROWS_TOOLTIP,
    check_texts,
    edits_input,
    ganspace_input,
    requested_edits,
    rows_spec,
)
from .sockets import Directions, WPlus

logger = logging.getLogger(__name__)


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
                edits_input(),
                io.String.Input(
                    "extra_edits",
                    default="",
                    multiline=True,
                    optional=True,
                    advanced=True,
                    tooltip="More edits, one per line: 'name strength [rows]', e.g. 'smile -1 0-7'.",
                ),
                ganspace_input(),
            ],
            outputs=[
                WPlus.Output("wplus", tooltip="The edited W+ code(s), same batch as the input."),
                io.String.Output("summary", tooltip="The edits applied."),
            ],
        )

    @classmethod
    def validate_inputs(cls, edits: dict | None = None, extra_edits: str | None = None) -> bool | str:
        """The number of slots and the extra edit lines, with the sliders' limits.

        ComfyUI hands ``edits`` over as ``{"edits": <slots>, "attribute_1": None, ...}``: the slot values are
        only known when the node runs (a NaN slot strength is refused then; ComfyUI checks their min/max).
        """
        slots = edits.get("edits") if isinstance(edits, dict) else edits
        if slots is not None and str(slots) not in {str(n) for n in range(1, MAX_EDITS + 1)}:
            return f"Edit Attributes input 'edits': {slots!r} is not a number of sliders between 1 and {MAX_EDITS}."
        if not isinstance(extra_edits, str):
            return True
        try:
            lines = parse_edit_lines(extra_edits, "Edit Attributes input 'extra_edits'")
        except LikenessError as exc:
            return str(exc)
        return check_texts("Edit Attributes", {f"extra_edits (line {e.line})": e.rows for e in lines})

    @classmethod
    def execute(
        cls, wplus: WPlusCodes, directions: DirectionSet, edits: dict, extra_edits: str = "", ganspace_mode="offset"
    ) -> io.NodeOutput:
        wplus = wplus_in(cls, "wplus", wplus)
        requested = requested_edits(edits, extra_edits)
        chosen = [Edit(directions[name], strength, rows_spec(rows)) for name, strength, rows in requested]
        codes = edit(wplus.codes, chosen, ganspace_mode=ganspace_mode) if chosen else wplus.codes
        summary = ", ".join(f"{n} {s:+g} (rows {r})" for n, s, r in requested) or "no edits"
        check_wplus(codes, f"Edit Attributes output (edits: {summary})", fix=LOWER)
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
                ganspace_input(),
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
        return check_texts(
            "Attribute Sweep", {"rows": rows, "rows_b": rows_b}, {"strengths": strengths, "strengths_b": strengths_b}
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
        wplus = wplus_in(cls, "wplus", wplus)
        dir_a = directions[attribute.strip()]
        values = parse_strengths(strengths, "Attribute Sweep input 'strengths'")
        if attribute_b and attribute_b.strip():
            dir_b = directions[attribute_b.strip()]
            values_b = parse_strengths(strengths_b, "Attribute Sweep input 'strengths_b'")
            check_sweep_size(
                len(values) * len(values_b) * wplus.batch, "Attribute Sweep (strengths x strengths_b x codes)"
            )
            result = grid_sweep(
                wplus.codes,
                dir_a,
                values,
                dir_b,
                values_b,
                rows_spec(rows),
                rows_spec(rows_b),
                ganspace_mode=ganspace_mode,
            )
        else:
            check_sweep_size(len(values) * wplus.batch, "Attribute Sweep (strengths x codes)")
            result = sweep(wplus.codes, dir_a, values, rows_spec(rows), ganspace_mode=ganspace_mode)
        check_wplus(result.wplus, f"Attribute Sweep output ({attribute} at {strengths})", fix=LOWER)
        points = result.wplus.shape[0] // wplus.batch
        absent = tuple(p * wplus.batch + i for p in range(points) for i in wplus.absent)
        out = wplus.with_codes(result.wplus, tuple(result.labels), absent=absent, sweep=attribute)
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
    def validate_inputs(cls, rows: str | None = None, alpha: float | None = None) -> bool | str:
        return first_problem(check_widgets(cls, alpha=alpha), check_texts("Mix Identities", {"rows": rows}))

    @classmethod
    def execute(cls, wplus_a: WPlusCodes, wplus_b: WPlusCodes, alpha: float, rows: str) -> io.NodeOutput:
        wplus_a, wplus_b = wplus_in(cls, "wplus_a", wplus_a), wplus_in(cls, "wplus_b", wplus_b)
        if wplus_b.batch == 1:
            wplus_b.only_present("Mix Identities input 'wplus_b'")
        codes = mix(wplus_a.codes, wplus_b.codes, alpha=alpha, rows=rows_spec(rows) or "all")
        check_wplus(codes, f"Mix Identities output (alpha {alpha:g})", fix="Use an alpha between 0 and 1.")
        absent = set(wplus_a.absent) | (set(wplus_b.absent) if wplus_b.batch == wplus_a.batch else set())
        source = wplus_b.meta.get("source", "B")
        out = wplus_a.with_codes(codes, wplus_a.labels, absent=tuple(absent), mixed_with=source, mix_rows=rows)
        remember_wplus(node_id(cls), "Likeness_MixIdentities", out)  # the live preview may start from it
        text = f"{out.batch} code(s): A with B on rows {rows} at alpha {alpha:g}"
        if out.absent:
            text += f"; items {list(out.absent)} have no code (no face) and stay absent"
        return io.NodeOutput(out, ui=ui.PreviewText(text))


EDITING_NODES = [LikenessEditAttributes, LikenessAttributeSweep, LikenessMixIdentities]
