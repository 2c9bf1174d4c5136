"""What the two trainers' smoke tests share: one smoke run per module, and "it learns" checked against a control."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likeness.models.training.state import read_log
from likeness.tools.cli import main


def mean(values) -> float:
    return float(np.mean(values))


def smoke_run(tmp_path_factory, verb: str) -> Path:
    """Run ``likeness <verb> --smoke`` (30 steps on the tiny UNet) into a fresh folder; returns that folder."""
    out = tmp_path_factory.mktemp(verb) / "run"
    assert main([verb, "--smoke", "--out", str(out)]) == 0
    return out


def assert_learns(verb: str, run: Path, control: Path, what: str) -> None:
    """The loss of ``run`` drops by > 0.3 from its first 5 to its last 5 steps, and the same run at a learning
    rate of ~0 (written to ``control``) ends > 0.4 above it, so the drop is learning."""
    losses = [r["loss"] for r in read_log(run)]
    first, last = mean(losses[:5]), mean(losses[-5:])
    assert last < first - 0.3, f"{what} did not learn: first 5 {first:.3f}, last 5 {last:.3f}"
    assert main([verb, "--smoke", "--out", str(control), "--lr", "1e-9", "--validate-every", "1000"]) == 0
    still = mean([r["loss"] for r in read_log(control)][-5:])
    assert still > last + 0.4, f"the control at lr 1e-9 ended at {still:.3f}, too close to {last:.3f}"
