"""The scaling benchmark's harness runs (tiny sizes) so that it cannot rot: child-process servers on
127.0.0.1, the exactly-once and queue-depth assertions, and the manifest timings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_batch_scaling", ROOT / "bench" / "bench_batch_scaling.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_one_small_sweep_on_two_simulated_servers():
    row = bench.run_one(points=6, n=2, exec_time=0.02, max_queue=2, max_seconds=60)
    assert row["points"] == 6 and row["servers"] == 2 and row["ideal"] == 3 * 0.02
    assert row["wall"] >= row["ideal"] and row["max_depth"] <= 2
    assert row["manifest_calls"]["update"] >= 2 * 6  # queued + done per point
    assert row["connections"] <= 2 * 3  # keep-alive: a few connections per server, not one per request


def test_manifest_micro_times_an_update_and_a_save():
    ((n, update, save, size),) = bench.manifest_micro([50], repeats=2)
    assert n == 50 and 0 < update < save and size > 50 * 100
