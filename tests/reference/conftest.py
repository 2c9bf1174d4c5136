"""Shared fixtures of the reference tier: ../shared/reference/synth.py and golden files."""

from __future__ import annotations

import importlib.util

import pytest
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors


@pytest.fixture(scope="session")
def synth(reference_dir):
    """``../shared/reference/synth.py`` as a module (deterministic weights from a manifest)."""
    spec = importlib.util.spec_from_file_location("likeness_ref_synth", reference_dir / "synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def read_golden(reference_dir):
    """``read_golden("golden/x.safetensors") -> (tensors, metadata)``.

    Tensors are cloned: ones read from the file may be unaligned, which changes
    CPU rounding by an ulp (golden/README.md).
    """

    def read(name: str):
        path = reference_dir / name
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        return {k: v.clone() for k, v in load_safetensors(str(path)).items()}, meta

    return read
