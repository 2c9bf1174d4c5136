"""What a node shows on itself after it runs: text, preview images and a warning.

The frontend shows ``images`` on any node; the pack's web extension (``web/js/likeness.js``) shows ``text`` in a
read-only box and ``likeness_warning`` as an amber banner (the node turns amber too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from comfy_api.latest import io, ui

__all__ = ["node_ui"]


def node_ui(
    cls: type[io.ComfyNode],
    text: str | None = None,
    images: Sequence[torch.Tensor] = (),
    warning: str | None = None,
) -> dict:
    """The ``ui`` dict of an ``io.NodeOutput``: ``text``, temp ``images`` (IMAGE batches), ``likeness_warning``."""
    out: dict = {}
    if text:
        out["text"] = [text]
    saved: list = []
    for batch in images:
        if batch is not None and batch.shape[0] > 0:
            saved.extend(ui.PreviewImage(batch[..., :3], cls=cls).as_dict()["images"])
    if saved:
        out["images"] = saved
    if warning:
        out["likeness_warning"] = [warning]
    return out
