"""Which ComfyUI the nodes need, checked before any node schema is built."""

from __future__ import annotations

import re

MIN_COMFYUI = (0, 11, 0)
_TOO_OLD = (
    "Likeness needs ComfyUI {need} or newer (the V3 node API, comfy_api.latest, with search aliases and "
    "advanced inputs); this is {have}. Update ComfyUI and restart."
)


def _check_comfyui_version() -> None:
    try:
        from comfyui_version import __version__
    except ImportError:  # pragma: no cover - a ComfyUI without the version file: the API check below decides
        return
    have = tuple(int(n) for n in re.findall(r"\d+", __version__)[:3])
    if have < MIN_COMFYUI:
        raise ImportError(_TOO_OLD.format(need=".".join(map(str, MIN_COMFYUI)), have=f"ComfyUI {__version__}"))


_check_comfyui_version()
try:
    from comfy_api.latest import ComfyExtension, io
except ImportError as exc:  # pragma: no cover - depends on the user's ComfyUI
    raise ImportError(_TOO_OLD.format(need=".".join(map(str, MIN_COMFYUI)), have="a ComfyUI without it")) from exc

__all__ = ["ComfyExtension", "io", "MIN_COMFYUI"]
