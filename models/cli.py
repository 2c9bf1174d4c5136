"""``python -m models.cli <command>``: the Likeness command line, run from the pack folder.

A shim: the commands live in the ``tools`` package beside ``models/`` (tooling
that ComfyUI never loads). Run from the pack's folder, where ``models`` is a
top-level package, this registers the pack folder as the package ``likeness``
(without running its ComfyUI entry point) and hands over to
``likeness.tools.cli``; nothing happens at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_PACK = "likeness"


def _tools_cli():
    if __package__ and __package__.count(".") >= 1:  # imported as <pack>.models.cli: tools is a sibling
        return importlib.import_module(__package__.rsplit(".", 1)[0] + ".tools.cli")
    if _PACK not in sys.modules:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location(
            _PACK, root / "__init__.py", submodule_search_locations=[str(root)]
        )
        sys.modules[_PACK] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{_PACK}.tools.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``doctor``, ``smoke-models``, ``queue``, ``demo``, ...); returns the exit code."""
    return _tools_cli().main(argv)


if __name__ == "__main__":
    sys.exit(main())
