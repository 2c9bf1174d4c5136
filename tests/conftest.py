"""Test harness: the repository root becomes the package ``likeness``.

The root ``__init__.py`` is the ComfyUI entry point; it is registered under the
alias ``likeness`` without being executed, so tests import
``likeness.models.*`` and ``likeness.nodes.*`` exactly as ComfyUI would
import ``<pack>.models.*`` (relative imports included), with or without
ComfyUI installed.

Tiers (markers) follow the folders: ``tests/unit`` -> ``unit``,
``tests/reference`` -> ``reference``, ``tests/comfyui`` -> ``comfyui``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"


def _register_alias(alias: str = "likeness") -> None:
    if alias in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(alias, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module


_register_alias()


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in ("unit", "reference", "comfyui"):
            item.add_marker(getattr(pytest.mark, parts[1]))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``; skips the test when it is absent (a user's clone)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (only CI and developers have ../shared)")
    return REFERENCE
