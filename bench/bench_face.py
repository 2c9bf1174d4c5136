"""CPU cost of face analysis per 512x512 image: detection, 68 landmarks, embedding, per backend.

Run from the repository root: ``python -m bench.bench_face [--repeats N] [--insightface-root DIR]``.
Uses the astronaut reference photo when ../shared/reference is present, else a synthetic image
(detection then finds nothing and only detection is timed). The insightface backend is timed only
with a real pack (a weight-free fake pack says nothing about speed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.errors import LikenessError  # noqa: E402
from models.face import create_analyzer  # noqa: E402


def _image() -> tuple[np.ndarray, str]:
    path = ROOT.parent / "shared" / "reference" / "faces" / "astronaut.png"
    if path.is_file():
        from PIL import Image

        return np.array(Image.open(path).convert("RGB")), "astronaut.png 512x512"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), "random 512x512 (no face)"


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up (model loading)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _row(
    name: str, det: float | None, lm: float | None, emb: float | None, total: float | None, base: float | None
) -> str:
    f = lambda v: f"{v:9.1f}" if v is not None else f"{'-':>9}"  # noqa: E731
    ratio = f"{total / base:6.2f}x" if total is not None and base else f"{'-':>7}"
    return f"{name:<34}{f(det)}{f(lm)}{f(emb)}{f(total)} {ratio}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--insightface-root", default=None, help="folder holding models/<pack>/ (real pack only)")
    ap.add_argument("--pack", default="antelopev2")
    args = ap.parse_args()
    img, what = _image()
    import torch

    _out(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch threads {torch.get_num_threads()}"
    )
    _out(
        f"image: {what}; median of {args.repeats} runs after a warm-up; ms per image (1 face); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    _out()
    _out(f"{'backend':<34}{'detect':>9}{'lm68':>9}{'embed':>9}{'total':>9}  vs base")
    base = None
    for threads in (None, 1):
        label = f"embedded (yuface threads={threads or 'default'})"
        det_only = create_analyzer("embedded", landmarks68=False, embeddings=False, num_threads=threads)
        det = _ms(lambda a=det_only: a.detect(img), args.repeats)
        full = create_analyzer("embedded", num_threads=threads)
        if not getattr(full, "has_dlib", False):
            _out(_row(label + " no dlib", det, None, None, det, base or det))
            base = base or det
            continue
        faces = det_only.detect(img)
        lm = _ms(lambda a=full, f=faces: a.landmarks(img, f[0]), args.repeats) if faces else None
        emb = _ms(lambda a=full, f=faces: a.embed(img, f[0]), args.repeats) if faces else None
        total = _ms(lambda a=full: a.detect(img), args.repeats)
        base = base or total
        _out(_row(label, det, lm, emb, total, base))
    try:
        ins = create_analyzer("insightface", models_root=args.insightface_root, pack=args.pack)
    except LikenessError as exc:
        _out(
            _row(f"insightface {args.pack}", None, None, None, None, None)
            + "  real pack not available here: "
            + str(exc).splitlines()[0]
        )
        return
    total = _ms(lambda: ins.detect(img), args.repeats)
    _out(_row(f"insightface {args.pack} (CPU)", None, None, None, total, base))
    _out(
        f"(embed on an existing face costs {_ms(lambda: ins.embed(img, ins.detect(img)[0]), args.repeats):.1f} ms "
        f"incl. a detect)"
    )


if __name__ == "__main__":
    main()
