"""Which row of an attribute sweep is the unedited one (the reference of background-preserving sweeps)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import LikenessError

__all__ = ["reference_row"]

_ITEM = re.compile(r"^\s*[^=,]+=\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*$")


def _strengths(label: str) -> list[float] | None:
    """``"age=+2.0, smile=-1.0 #1"`` -> ``[2.0, -1.0]`` (labels of models.directions sweeps); None if not one."""
    body = label.split(" #", 1)[0]
    values = []
    for part in body.split(","):
        match = _ITEM.match(part)
        if match is None:
            return None
        values.append(float(match.group(1)))
    return values or None


def reference_row(labels: Sequence[str]) -> int:
    """Index of the first sweep point whose strengths are all 0.

    Args:
        labels: the W+ batch's labels as Attribute Sweep writes them (``"age=+0.0"``,
            ``"age=+2.0, smile=-1.0"``, with ``" #k"`` per identity).

    Raises:
        LikenessError: no label is a sweep point with every strength 0.
    """
    for i, label in enumerate(labels):
        values = _strengths(label)
        if values is not None and all(v == 0.0 for v in values):
            return i
    shown = ", ".join(list(labels)[:6]) + (" ..." if len(labels) > 6 else "")
    raise LikenessError(
        f"hold_background keeps every image like the sweep's unedited one, but no W+ code is labelled with strength 0 "
        f"(labels: {shown or 'none'}). Include 0 in the sweep's strengths (e.g. '-4:4:2'), or set reference_row."
    )
