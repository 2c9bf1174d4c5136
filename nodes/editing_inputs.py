"""Inputs shared by the editing nodes: the slider slots, the row and strength texts, and their checks."""

from __future__ import annotations

from comfy_api.latest import io

from ..models.directions import resolve_rows
from ..models.errors import LikenessError
from ..models.validation import STRENGTH_LIMIT, check_strength, parse_edit_lines, parse_strengths

__all__ = [
    "MAX_EDITS",
    "ROWS_TOOLTIP",
    "LOWER",
    "ganspace_input",
    "edits_input",
    "rows_spec",
    "requested_edits",
    "check_texts",
]

MAX_EDITS = 8
ROWS_TOOLTIP = (
    "W+ rows the edit touches: 'default' (the direction's own rows), 'all', 'coarse' (0-3: pose, face shape), "
    "'middle' (4-7: expression, hair), 'fine' (8-17: colour, texture), 'seeprettyface' (0-7), or a list like '0-3,8'."
)
LOWER = "Lower the strengths (or edit fewer rows): the edited code left the range of real faces."
GANSPACE_TOOLTIP = (
    "GANSpace directions only. 'offset': the slider moves the current coordinate (0 = no change). "
    "'set': the official w-plus-adapter rule, the slider SETS the coordinate in standard deviations (0 is not neutral)."
)


def ganspace_input() -> io.Combo.Input:
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
            min=-STRENGTH_LIMIT,
            max=STRENGTH_LIMIT,
            step=0.1,
            tooltip=f"Edit {i}: strength (0 = no change). Recommended ranges are listed in the loader's info output.",
        ),
        io.String.Input(f"rows_{i}", default="default", tooltip=ROWS_TOOLTIP),
    ]


def edits_input() -> io.DynamicCombo.Input:
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


def rows_spec(spec: str | None) -> str | None:
    """A rows text, or None for 'default' (the direction's own rows)."""
    spec = (spec or "default").strip()
    return None if spec == "default" else spec


def requested_edits(edits: dict, extra_edits: str) -> list[tuple[str, float, str]]:
    """``(name, strength, rows)`` of the filled slots, then of the extra lines (read once, with the slider limits)."""
    requested = []
    for i in range(1, MAX_EDITS + 1):
        name = (edits.get(f"attribute_{i}") or "").strip()
        if name:
            strength = check_strength(edits.get(f"strength_{i}", 0.0), f"Edit Attributes input 'strength_{i}'")
            requested.append((name, strength, edits.get(f"rows_{i}") or "default"))
    lines = parse_edit_lines(extra_edits or "", "Edit Attributes input 'extra_edits'")
    return requested + [(e.name, e.strength, e.rows) for e in lines]


def check_texts(
    node: str, rows: dict[str, str | None] | None = None, strengths: dict[str, str | None] | None = None
) -> bool | str:
    """``True`` or the first problem of the row and strength texts a node can check before the graph runs."""
    for name, spec in (rows or {}).items():
        if isinstance(spec, str) and rows_spec(spec) is not None:
            try:
                resolve_rows(rows_spec(spec))
            except LikenessError as exc:
                return f"{node} input '{name}': {exc}"
    try:
        for name, text in (strengths or {}).items():
            if isinstance(text, str):
                parse_strengths(text, f"{node} input '{name}'")
    except LikenessError as exc:
        return str(exc)
    return True
