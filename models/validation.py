"""The one validation layer for what flows between Likeness nodes: W+ codes, edit strengths and sweeps.

Every W+ code that enters or leaves a node (loaded, inverted, edited, swept, mixed) goes through
:func:`check_wplus`; every strength typed as text (sweeps, ``extra_edits``) is read by
:func:`parse_strengths` / :func:`parse_edit_lines`, once, with the limits of the strength sliders.
Errors are :class:`~.errors.InputError` and say where (node and input, or file), the value, and what to do.

Bounds, derived from data:

* **W+ magnitude** :data:`WPLUS_ABS_LIMIT` = 100. The seven real e4e codes of the w-plus-adapter test data
  (absolute W+, e4e output + ``latent_avg``) lie within ±3.01 (row norms <= 14.2); the smoke e4e (random
  weights) within ±4.4. One edit at the slider limit (±30) with the strongest published direction
  (PreciseControl ``pose``) reaches ±39.7. 100 keeps a margin of 2.5x over that extreme edit and 33x over
  real codes; a code beyond it renders garbage, and values such as 1e30 overflow half-precision attention
  into an all-black image.
* **Strengths** :data:`STRENGTH_LIMIT` = 30, the range of the strength sliders (10x the widest recommended
  range of any published direction).
* **Sweep points** :data:`MAX_SWEEP_POINTS` = 256 codes per sweep (one latent each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .errors import InputError

__all__ = [
    "WPLUS_ABS_LIMIT",
    "STRENGTH_LIMIT",
    "MAX_SWEEP_POINTS",
    "STRENGTHS_HELP",
    "EditLine",
    "quoted",
    "check_wplus",
    "check_number",
    "check_strength",
    "check_sweep_size",
    "parse_strengths",
    "parse_edit_lines",
]

WPLUS_ABS_LIMIT = 100.0
STRENGTH_LIMIT = 30.0
MAX_SWEEP_POINTS = 256
STRENGTHS_HELP = (
    f"Write strengths as '-4:4:2' (start:stop:step, stop included) or as a list '-2,0,2', each between "
    f"{-STRENGTH_LIMIT:g} and {STRENGTH_LIMIT:g} (the slider range), at most {MAX_SWEEP_POINTS} values."
)


def quoted(value: object, limit: int = 60) -> str:
    """``repr`` of a value for a message, cut to about ``limit`` characters (the quotes stay)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _where(code: int, flat: int) -> str:
    row, col = divmod(flat, 512)
    return f"code {code}, row {row}, column {col}"


def check_wplus(codes: torch.Tensor, where: str, *, source: str | None = None, fix: str | None = None) -> None:
    """Refuse a W+ batch with NaN/inf values or values beyond ±:data:`WPLUS_ABS_LIMIT`.

    Args:
        codes: ``[B, 18, 512]`` W+ codes (any float dtype, any device).
        where: what holds them, e.g. ``"Apply W+ Adapter input 'wplus'"``.
        source: the file they came from, quoted in the message.
        fix: what the user should do; a default hint otherwise.

    Raises:
        InputError: naming ``where``, ``source``, the offending value and its code/row/column.
    """
    flat = codes.detach().reshape(codes.shape[0], -1) if codes.ndim == 3 else codes.detach().reshape(1, -1)
    src = f" (file {source})" if source else ""
    finite = torch.isfinite(flat)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        nan = int(torch.isnan(flat).sum())
        inf = int((~finite).sum()) - nan
        kinds = ", ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if p)
        raise InputError(
            f"{where}{src}: the W+ code holds {kinds} value(s), first at {_where(*bad)} "
            f"(value {flat[bad[0], bad[1]].item()}). "
            + (fix or "The code is damaged: invert the photo again (Invert Face) or load another W+ file.")
        )
    if flat.numel() == 0:
        return
    peak = flat.abs().flatten().argmax().item()
    b, i = divmod(int(peak), flat.shape[1])
    value = float(flat[b, i])
    if abs(value) > WPLUS_ABS_LIMIT:
        raise InputError(
            f"{where}{src}: W+ value {value:.4g} at {_where(b, i)} is beyond ±{WPLUS_ABS_LIMIT:g} (real e4e codes "
            "stay within ±3, an edit at a slider limit within ±40). "
            + (fix or "The code is damaged or was scaled: invert the photo again or load another W+ file.")
        )


def check_number(
    value: object, where: str, lo: float | None = None, hi: float | None = None, what: str = "the allowed range"
) -> float:
    """``value`` as a finite float within ``[lo, hi]``; else an :class:`InputError` quoting it and the range."""
    if lo is not None and hi is not None:
        span = f"{lo:g}..{hi:g}"
    else:
        span = f">= {lo:g}" if lo is not None else (f"<= {hi:g}" if hi is not None else "")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: {value!r:.60} is not a number" + (f"; give a value in {span}." if span else ".")
        ) from None
    if not math.isfinite(number):
        raise InputError(
            f"{where}: {quoted(value)} is not a finite number" + (f"; give a value in {span}." if span else ".")
        )
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise InputError(f"{where}: {number:g} is outside {span}, {what}.")
    return number


def check_strength(value: object, where: str) -> float:
    """A strength: finite, within ±:data:`STRENGTH_LIMIT` (the sliders' range)."""
    return check_number(value, where, -STRENGTH_LIMIT, STRENGTH_LIMIT, "the range of the strength sliders")


def check_sweep_size(points: int, where: str) -> None:
    """Refuse sweeps of more than :data:`MAX_SWEEP_POINTS` codes (each one is a latent of the batch)."""
    if points > MAX_SWEEP_POINTS:
        raise InputError(
            f"{where}: {points} sweep points (strengths x codes); at most {MAX_SWEEP_POINTS}, one latent each. "
            "Use fewer strengths or a larger step."
        )


def _range(src: str, where: str) -> list[float]:
    parts = src.split(":")
    if len(parts) not in (2, 3):
        raise ValueError("use start:stop or start:stop:step")
    a = check_strength(parts[0], f"{where}, start")
    b = check_strength(parts[1], f"{where}, stop")
    step = check_number(parts[2], f"{where}, step") if len(parts) == 3 else (1.0 if b >= a else -1.0)
    if step == 0 or (b - a) * step < 0:
        raise ValueError(f"step {step:g} never goes from {a:g} to {b:g}")
    count = (b - a) / step
    if not math.isfinite(count) or count + 1 > MAX_SWEEP_POINTS:
        raise ValueError(f"step {step:g} from {a:g} to {b:g} gives more than {MAX_SWEEP_POINTS} values")
    return [round(a + i * step, 10) for i in range(int(math.floor(count + 1e-9)) + 1)]


def parse_strengths(text: str | float | Sequence[float], where: str = "strengths") -> list[float]:
    """Read sweep strengths, with the sliders' limits.

    Accepted: ``"-4:4:2"`` (start:stop:step, **stop included** when reached), ``"-1:1"`` (step 1),
    ``"-2,0,2"``, ``"1.5"``, a number, or a list of numbers (checked, not re-read).

    Raises:
        InputError: unreadable text, a zero step or one pointing away from stop, a value that is not
            finite or is beyond ±:data:`STRENGTH_LIMIT`, or more than :data:`MAX_SWEEP_POINTS` values;
            the message starts with ``where`` and quotes the text.
    """
    if not isinstance(text, str):
        values = [text] if isinstance(text, (int, float)) else list(text)
        if not values:
            raise InputError(f"{where}: no strengths given. {STRENGTHS_HELP}")
        check_sweep_size(len(values), where)
        try:
            return [check_strength(x, where) for x in values]
        except InputError as exc:
            raise InputError(f"{exc} {STRENGTHS_HELP}") from None
    src = text.strip()
    label = f"{where} = {quoted(text)}"
    try:
        if ":" in src:
            return _range(src, label)
        parts = [p for p in src.replace(";", ",").split(",") if p.strip()]
        if not parts:
            raise ValueError("no numbers")
        if len(parts) > MAX_SWEEP_POINTS:
            raise ValueError(f"{len(parts)} values; at most {MAX_SWEEP_POINTS}")
        return [check_strength(p, label) for p in parts]
    except InputError as exc:
        raise InputError(f"{exc} {STRENGTHS_HELP}") from None
    except ValueError as exc:
        raise InputError(f"{label}: cannot read it ({exc}). {STRENGTHS_HELP}") from None


class EditLine(NamedTuple):
    """One ``name strength [rows]`` line of a free-text edit list."""

    name: str
    strength: float
    rows: str
    line: int


def parse_edit_lines(text: str, where: str = "extra_edits") -> list[EditLine]:
    """Lines ``name strength [rows]`` (e.g. ``age +3 0-7``; ``name=strength`` also works); ``#`` starts a comment.

    Raises:
        InputError: a line without a strength, or a strength that is not a finite number within
            ±:data:`STRENGTH_LIMIT`; the message names ``where``, the line number and its text.
    """
    edits = []
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ").split()
        label = f"{where}, line {n} {quoted(raw.strip())}"
        if len(parts) < 2 or len(parts) > 3:
            raise InputError(f"{label}: write 'name strength [rows]', e.g. 'smile -1 0-7'.")
        strength = check_strength(parts[1], f"{label}, strength")
        edits.append(EditLine(parts[0], strength, parts[2] if len(parts) > 2 else "default", n))
    return edits
