"""Checks shared by the nodes' ``validate_inputs``: numbers against their widgets' limits, texts, W+ inputs.

ComfyUI checks a widget's min/max itself, but not for the inputs a node's ``validate_inputs`` takes (those
are left to the node), and never for NaN (a prompt's JSON may carry ``NaN``, which every comparison lets
through). :func:`check_widgets` redoes both from the node's own schema, so the limits live in one place.
"""

from __future__ import annotations

import functools

from comfy_api.latest import io

from ..models.errors import LikenessError
from ..models.inversion.codes import WPlusCodes, wplus_input
from ..models.validation import check_number

__all__ = ["display_name", "node_id", "check_widgets", "first_problem", "wplus_in"]


@functools.cache
def _limits(cls: type[io.ComfyNode]) -> dict[str, tuple[float | None, float | None]]:
    """``{input id: (min, max)}`` of every Int/Float input of a node, DynamicCombo children included."""
    limits: dict[str, tuple[float | None, float | None]] = {}
    pending = list(cls.define_schema().inputs)
    while pending:
        inp = pending.pop()
        if isinstance(inp, io.DynamicCombo.Input):
            pending.extend(i for option in inp.options for i in option.inputs)
        elif isinstance(inp, (io.Float.Input, io.Int.Input)):
            limits[inp.id] = (inp.min, inp.max)
    return limits


@functools.cache
def display_name(cls: type[io.ComfyNode]) -> str:
    """The node's display name, for messages."""
    return cls.define_schema().display_name or cls.__name__


def node_id(cls: type[io.ComfyNode]) -> str | None:
    """The id of the node in the running prompt; None when ``execute`` is called directly (tests, scripts)."""
    return getattr(cls.hidden, "unique_id", None)


def check_widgets(cls: type[io.ComfyNode], **values) -> bool | str:
    """``True``, or the first number that is not finite or lies outside its widget's min/max.

    ``None`` values (a linked input, whose value is not known before the run) are not checked.
    """
    limits = _limits(cls)
    name = display_name(cls)
    for key, value in values.items():
        if value is None or key not in limits:
            continue
        lo, hi = limits[key]
        try:
            check_number(value, f"{name} input '{key}'", lo, hi, "the widget's range")
        except LikenessError as exc:
            return str(exc)
    return True


def first_problem(*results: bool | str) -> bool | str:
    """The first result of several checks that is not ``True``, else ``True``."""
    return next((r for r in results if r is not True), True)


def wplus_in(cls: type[io.ComfyNode], name: str, value) -> WPlusCodes:
    """A W+ input checked again on entry (finite, sane magnitude), the error naming the node and the input."""
    return wplus_input(value, f"{display_name(cls)} input '{name}'")
