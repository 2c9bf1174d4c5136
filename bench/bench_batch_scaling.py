"""Batch client scaling: wall time of sweeps on N simulated ComfyUI servers, dispatch overhead, manifest cost.

Each simulated server (``tools/batch/fake_server.py``) runs one prompt at a time and takes a fixed time
per prompt, sleeping as a GPU leaves the CPU free, and answers HTTP and the websocket like ComfyUI. The
servers run in a child process, so their request handling does not share the client's interpreter; they
listen on 127.0.0.1 only, at most 8 of them, and the child exits after ``--max-seconds`` whatever happens.
The client is the real one: ``run_batch`` with its defaults (2 prompts per server, websocket when
``websocket-client`` is installed, 0.5 s polls).

Tables: wall time per sweep size and server count against the ideal ``ceil(points / N) * t`` (speed-up
vs one server), also at a short ``t`` where the client, not the servers, sets the pace; the client's
overhead per prompt (wall time above the ideal, and client CPU time); the
manifest's cost per point (time in ``Manifest.save`` during the runs, and one save at 10-10,000 points).
Every run asserts that each prompt ran exactly once over all servers and that no server's queue held more
than ``max_queue`` prompts.

    python -m bench.bench_batch_scaling                 # t = 0.2 s, sweeps 10/50/200, N = 1/2/4/8, then
                                                        # 200 points at t = 0.02 s (client-bound) (~3 min)
    python -m bench.bench_batch_scaling --quick         # a smoke run for CI (~15 s)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_SERVERS = 8
WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 20, "model": ["4", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bench/run"}},
}


def _load_pack() -> None:
    """Make the pack importable as ``likeness`` (its root ``__init__`` is ComfyUI's entry point: not run)."""
    if "likeness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "likeness", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        sys.modules["likeness"] = importlib.util.module_from_spec(spec)


# ---- the child process: N simulated servers -------------------------------------------------------------
def serve(n: int, exec_time: float, max_seconds: float) -> int:
    """Run ``n`` fake servers; print their URLs; answer ``stats``/``quit`` on stdin; die after max_seconds."""
    _load_pack()
    from likeness.tools.batch.fake_server import FakeComfy

    if not 1 <= n <= MAX_SERVERS:
        raise SystemExit(f"--serve takes 1..{MAX_SERVERS} servers, got {n}")
    timer = threading.Timer(max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    fakes = [FakeComfy(exec_time=exec_time, steps=3) for _ in range(n)]
    sys.stdout.write(json.dumps({"urls": [f.url for f in fakes]}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() == "stats":
            completions: Counter[str] = Counter()
            for f in fakes:
                completions.update(f.completions)
            stats = {
                "completions": dict(completions),
                "max_depth": [f.max_depth for f in fakes],
                "requests": sum(sum(f.requests.values()) for f in fakes),
                "connections": sum(len(f.peers) for f in fakes),
            }
            sys.stdout.write(json.dumps(stats) + "\n")
            sys.stdout.flush()
        elif line.strip() == "quit":
            break
    for f in fakes:
        f.kill()
    return 0


class Servers(contextlib.AbstractContextManager):
    """The child process with ``n`` servers (``urls``); ``stats()`` asks it for its counters."""

    def __init__(self, n: int, exec_time: float, max_seconds: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_batch_scaling", "--serve", str(n), "--exec-time", str(exec_time)]
            + ["--max-seconds", str(max_seconds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.urls = json.loads(self.proc.stdout.readline())["urls"]

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ---- the client side --------------------------------------------------------------------------------------
class ManifestTimer:
    """Counts and times ``Manifest.update`` (one point's change) and ``Manifest.save`` while active."""

    def __init__(self, manifest_cls):
        self.cls = manifest_cls
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.originals = {
            name: getattr(manifest_cls, name) for name in ("update", "save") if hasattr(manifest_cls, name)
        }

    def __enter__(self):
        for name, original in self.originals.items():
            setattr(self.cls, name, self._timed(name, original))
        return self

    def _timed(self, name, original):
        def timed(*args):
            t0 = time.perf_counter()
            original(*args)
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

        return timed

    def __exit__(self, *exc: object) -> None:
        for name, original in self.originals.items():
            setattr(self.cls, name, original)


def run_one(points: int, n: int, exec_time: float, max_queue: int, max_seconds: float) -> dict:
    """One sweep of ``points`` prompts on ``n`` servers; asserts nothing ran twice and queues stayed short."""
    from likeness.tools.batch.manifest import Manifest
    from likeness.tools.batch.runner import run_batch

    spec = {"seeds": {"node": "3", "input": "seed", "values": list(range(1, points + 1))}}
    with Servers(n, exec_time, max_seconds) as servers, tempfile.TemporaryDirectory() as tmp:
        with ManifestTimer(Manifest) as manifest_time:
            cpu0, t0 = time.process_time(), time.perf_counter()
            report = run_batch(WORKFLOW, spec, servers.urls, Path(tmp) / "out", max_queue_per_server=max_queue)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stats = servers.stats()
        manifest_bytes = (Path(tmp) / "out" / "manifest.json").stat().st_size
        manifest_calls, manifest_seconds = dict(manifest_time.calls), dict(manifest_time.seconds)
    assert report.ok, report.summary()
    ran = stats["completions"]
    assert sorted(ran) == sorted(p.prompt_id for p in report.points), "a point is missing on the servers"
    assert set(ran.values()) == {1}, f"prompts ran twice: {[k for k, v in ran.items() if v > 1]}"
    assert max(stats["max_depth"]) <= max_queue, f"a server queue reached {max(stats['max_depth'])} > {max_queue}"
    ideal = math.ceil(points / n) * exec_time
    return {
        "points": points,
        "servers": n,
        "wall": wall,
        "ideal": ideal,
        "cpu": cpu,
        "requests": stats["requests"],
        "connections": stats["connections"],
        "max_depth": max(stats["max_depth"]),
        "manifest_calls": manifest_calls,
        "manifest_seconds": manifest_seconds,
        "manifest_bytes": manifest_bytes,
    }


def manifest_micro(sizes: list[int], repeats: int = 5) -> list[tuple[int, float, float, int]]:
    """Per size ``n`` of finished points: seconds for one ``update`` (a point's change) and one ``save``
    (the whole snapshot; at the start and end of a run), medians of ``repeats``, and the snapshot's bytes."""
    from likeness.tools.batch.manifest import Manifest

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Manifest.open(Path(tmp))
            for i in range(n):
                rec = manifest.record(f"{i:016x}", i, f"face=alice_age=+2_seed={i}", {"3.seed": i, "10.strength_1": 2})
                rec.status, rec.server, rec.attempts = "done", "http://127.0.0.1:8188", 1
                rec.outputs = [{"node": "9", "kind": "images", "index": 0, "file": f"{i:04d}_seed={i}_n9_0.png"}]
                rec.queued_at = rec.started_at = rec.finished_at = time.time()
            timings: dict[str, list[float]] = {"update": [], "save": []}
            for _ in range(repeats):
                t0 = time.perf_counter()
                manifest.update(rec)
                t1 = time.perf_counter()
                manifest.save()
                timings["update"].append(t1 - t0)
                timings["save"].append(time.perf_counter() - t1)
            manifest.close()
            size = manifest.path.stat().st_size
            rows.append((n, statistics.median(timings["update"]), statistics.median(timings["save"]), size))
    return rows


def _machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _print_scaling(rows: list[dict], title: str) -> None:
    out = sys.stdout.write
    out(f"\n{title}\n\n")
    out(
        "| points | servers | wall s | ideal s | speed-up vs 1 | efficiency | overhead ms/prompt | "
        "client CPU ms/prompt | requests/prompt | max queue |\n"
    )
    out("|---|---|---|---|---|---|---|---|---|---|\n")
    base = {r["points"]: r["wall"] for r in rows if r["servers"] == 1}
    for r in rows:
        speedup = base.get(r["points"], float("nan")) / r["wall"]
        out(
            f"| {r['points']} | {r['servers']} | {r['wall']:.2f} | {r['ideal']:.2f} | {speedup:.2f} | "
            f"{r['ideal'] / r['wall']:.0%} | {(r['wall'] - r['ideal']) / r['points'] * 1000:.1f} | "
            f"{r['cpu'] / r['points'] * 1000:.1f} | {r['requests'] / r['points']:.1f} | {r['max_depth']} |\n"
        )


def _print_manifest(rows: list[dict], micro: list[tuple[int, float, float, int]]) -> None:
    out = sys.stdout.write
    out("\nmanifest during the runs (largest server count):\n\n")
    out("| points | updates/point | ms in update/point | saves | ms in save/point | manifest KiB |\n")
    out("|---|---|---|---|---|---|\n")
    for r in rows:
        if r["servers"] == max(x["servers"] for x in rows):
            calls, secs, p = r["manifest_calls"], r["manifest_seconds"], r["points"]
            out(
                f"| {p} | {calls.get('update', 0) / p:.1f} | {secs.get('update', 0) / p * 1000:.3f} | "
                f"{calls.get('save', 0)} | {secs.get('save', 0) / p * 1000:.3f} | {r['manifest_bytes'] / 1024:.0f} |\n"
            )
    out("\none manifest write with n finished points:\n\n")
    out("| n | ms per update (one point) | ms per save (snapshot) | snapshot KiB |\n|---|---|---|---|\n")
    for n, update, save, size in micro:
        out(f"| {n} | {update * 1000:.3f} | {save * 1000:.2f} | {size / 1024:.0f} |\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exec-time", type=float, default=0.2, help="seconds per prompt on a simulated server")
    parser.add_argument("--points", default="10,50,200", help="sweep sizes, comma-separated (10..200)")
    parser.add_argument("--servers", default="1,2,4,8", help="server counts, comma-separated (1..8)")
    parser.add_argument("--max-queue", type=int, default=2, help="prompts per server (run_batch default 2)")
    parser.add_argument("--max-seconds", type=float, default=300, help="a server process lives at most this long")
    parser.add_argument(
        "--client-bound",
        type=float,
        default=0.02,
        help="also sweep the largest size with this short time per prompt, where the client sets the pace (0: off)",
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 10 and 20 points on 1 and 2 servers")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.exec_time, args.max_seconds)
    _load_pack()
    if args.quick:
        args.client_bound = 0
    points = [10, 20] if args.quick else [int(x) for x in args.points.split(",")]
    counts = [1, 2] if args.quick else [int(x) for x in args.servers.split(",")]
    if not all(1 <= n <= MAX_SERVERS for n in counts) or not all(1 <= p <= 1000 for p in points):
        parser.error(f"servers must be 1..{MAX_SERVERS} and points 1..1000")
    logging.basicConfig(level=logging.WARNING)
    plan = [(p, n, args.exec_time) for p in points for n in counts]
    if args.client_bound > 0:  # where the client, not the servers, sets the pace
        plan += [(max(points), n, args.client_bound) for n in counts]
    rows = []
    for p, n, t in plan:
        rows.append(run_one(p, n, t, args.max_queue, args.max_seconds) | {"exec_time": t})
        sys.stderr.write(
            f"{p} points on {n} servers, t={t}: {rows[-1]['wall']:.2f} s (ideal {rows[-1]['ideal']:.2f} s)\n"
        )
    micro = manifest_micro([10, 200] if args.quick else [10, 200, 1000, 10000])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": _machine(), "rows": rows, "micro": micro}, indent=1))
    sys.stdout.write(f"\nmachine: {_machine()}\n")
    for t in dict.fromkeys(r["exec_time"] for r in rows):
        _print_scaling([r for r in rows if r["exec_time"] == t], f"simulated GPU time per prompt t = {t:g} s:")
    _print_manifest([r for r in rows if r["exec_time"] == args.exec_time], micro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
