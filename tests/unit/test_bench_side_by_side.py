"""The side-by-side benchmark's reduced CPU mode runs (what `make bench-gpu` runs on CUDA), so it cannot rot.

Shapes and columns only, never timings: every case gives its rows, each row a positive time, the
markdown table has its columns, and without an official checkout there are no ratios.
The ratio statistics and the parity gate are checked on fixed numbers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = "| measure | ours / baseline | min–max | n | ours | baseline | parity (max abs) | note |"


def _harness():
    if "bench_harness" not in sys.modules:  # a dataclass module must be importable by name while it executes
        spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
        sys.modules["bench_harness"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["bench_harness"])
    return sys.modules["bench_harness"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "bench.side_by_side", "--quick", "--threads", "1"]
    cmd += ["--json", str(out / "quick.json"), "--markdown", str(out / "quick.md")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "quick.json").read_text()), (out / "quick.md").read_text(), done.stdout


def test_quick_mode_gives_every_case_its_rows(quick):
    data, _, _ = quick
    meta, rows = data["meta"], data["rows"]
    assert meta["quick"] is True and meta["device"] == "cpu" and meta["rounds"] == 1
    assert "cores" in meta["machine"] and "torch" in meta["machine"]
    cases = [r["case"] for r in rows]
    assert [c for c in cases if c.startswith("e4e encoder, batch") and c.endswith("fp32")] == [
        "e4e encoder, batch 1, fp32",
        "e4e encoder, batch 2, fp32",
    ]
    assert sum("e4e peak memory" in c for c in cases) == 2  # batch 1 and 2, our arm only
    assert any(c.startswith("StyleGAN2 synthesis 32²") for c in cases)
    assert any("attn2" in c for c in cases) and any("UNet forward" in c for c in cases)
    for row in rows:
        assert set(row) >= {"case", "ours_s", "base_s", "ratio", "ratio_min", "ratio_max", "n", "parity", "note"}
        assert row["ours_s"] > 0 and row["n"] >= 1
        if row["baseline"] == "stock":  # W+ processors vs stock diffusers attention: measured in the same run
            assert row["ratio"] > 0 and row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
        else:  # no official checkout: our absolute figures only
            assert row["ratio"] is None and row["base_s"] is None


def test_quick_mode_markdown_table_has_its_columns(quick):
    data, text, stdout = quick
    lines = text.splitlines()
    assert lines[0].startswith("Machine: ") and COLUMNS in lines
    table = [line for line in lines[lines.index(COLUMNS) + 2 :] if line.startswith("| ")]
    assert len(table) == len(data["rows"])
    assert all(line.count(" | ") == 7 for line in table)  # 8 cells each
    assert text in stdout


def test_ratio_row_is_the_median_of_per_round_ratios_with_min_and_max():
    h = _harness()
    row = h.ratio_row("x", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], parity=0.5)
    assert (row.ratio, row.ratio_min, row.ratio_max, row.n) == (1.0, 0.5, 1.5, 3)
    assert (row.ours_s, row.base_s, row.parity) == (2.0, 2.0, 0.5)
    alone = h.ratio_row("y", [3.0, 1.0], None)
    assert alone.ratio is None and alone.base_s is None and alone.ours_s == 2.0 and alone.baseline == ""


def test_parity_gate_refuses_to_time_different_outputs():
    h = _harness()
    a = torch.zeros(2, 3)
    assert h.check_parity("same", a, a + 1e-6, 1e-4) == pytest.approx(1e-6)
    with pytest.raises(h.ParityError, match=r"outputs differ by 0\.01 \(> 0\.0001\)"):
        h.check_parity("e4e", a, a + 0.01, 1e-4)
    with pytest.raises(h.ParityError, match=r"shapes differ: ours \[2, 3\], baseline \[3, 2\]"):
        h.check_parity("e4e", a, torch.zeros(3, 2), 1e-4)


def test_interleaved_rounds_alternate_the_order():
    h = _harness()
    calls = []
    arms = {"ours": lambda: calls.append("o"), "official": lambda: calls.append("f")}
    times = h.time_rounds(arms, rounds=3, device=torch.device("cpu"), warmup=1)
    assert calls == ["o", "f", "o", "f", "f", "o", "o", "f"]
    assert [len(v) for v in times.values()] == [3, 3]
