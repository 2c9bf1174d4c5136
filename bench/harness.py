"""Shared benchmark machinery: interleaved timing, ratio statistics, machine line, official code import.

Rules every side-by-side figure follows (README "Performance"):

* both arms live in one process with identical weights, and their outputs are
  compared (a parity check) before anything is timed;
* each arm is warmed up, then timed in interleaved rounds (the order alternates
  every round, so drift and a neighbour's load hit both arms alike); on CUDA
  every call is synchronised;
* a ratio is ``ours / baseline`` per round; the table gives the median of those
  ratios with their min-max and the number of rounds n, next to the median times.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def likeness():
    """The repository imported as the package ``likeness`` (as the tests do), without running ComfyUI code."""
    if "likeness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "likeness", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        sys.modules["likeness"] = importlib.util.module_from_spec(spec)
    return sys.modules["likeness"]


def machine(device: torch.device) -> str:
    """One line naming the CPU (or GPU), core count, torch, threads and Python."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}"
    )
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host: {text}"
    return text


def load_average() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Row:
    """One line of a result table: a ratio ours/baseline (or absolute times when there is no baseline)."""

    case: str
    ours_s: float
    base_s: float | None = None
    ratio: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    n: int = 0
    baseline: str = "official"
    parity: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def time_rounds(arms: dict[str, Callable[[], object]], rounds: int, device: torch.device, warmup: int | None = None):
    """Run every arm ``warmup`` times (1 on the CPU, 3 on CUDA), then ``rounds`` interleaved rounds.

    Returns ``{arm: [seconds]}``. The order of the arms is reversed every other round.
    """
    warmup = (3 if device.type == "cuda" else 1) if warmup is None else warmup
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            arms[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def ratio_row(case: str, ours: list[float], base: list[float] | None, baseline: str = "official", **kw) -> Row:
    """Median time of ``ours``; with a baseline also the per-round ratios' median, min and max."""
    if not base:
        return Row(case, statistics.median(ours), n=len(ours), baseline="", **kw)
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    return Row(
        case,
        statistics.median(ours),
        statistics.median(base),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
        len(ratios),
        baseline,
        **kw,
    )


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


class ParityError(AssertionError):
    """The two arms disagree: nothing is timed."""


def check_parity(case: str, ours: torch.Tensor, base: torch.Tensor, tol: float) -> float:
    """Max abs difference of two outputs; raises :class:`ParityError` above ``tol``."""
    if ours.shape != base.shape:
        raise ParityError(f"{case}: output shapes differ: ours {list(ours.shape)}, baseline {list(base.shape)}")
    err = max_abs(ours, base)
    if not err <= tol:
        raise ParityError(f"{case}: outputs differ by {err:.3g} (> {tol:g}); not timing a different computation")
    return err


# --- official checkouts -----------------------------------------------------------------------------------------


class _StubbedExtension(types.ModuleType):
    """Stands in for a JIT-compiled CUDA extension; any use says so."""

    def __getattr__(self, name: str):
        raise RuntimeError(
            f"the official CUDA op {self.__name__}.{name} is stubbed in this benchmark (no nvcc build); "
            "its pure-PyTorch fallback should have been used"
        )


@contextlib.contextmanager
def stubbed_cuda_extensions() -> Iterator[None]:
    """``torch.utils.cpp_extension.load`` returns a stub while the official modules import (they build CUDA ops)."""
    import torch.utils.cpp_extension as cpp_extension

    real = cpp_extension.load
    cpp_extension.load = lambda name, *args, **kwargs: _StubbedExtension(name)
    try:
        yield
    finally:
        cpp_extension.load = real


def import_official(root: Path, module: str, clash: tuple[str, ...] = ()) -> types.ModuleType:
    """Import ``module`` from an official checkout at ``root`` with its CUDA ops stubbed.

    Top-level names in ``clash`` (e.g. ``models``, which this repository also has) are
    removed from ``sys.modules`` first and the checkout is put first on ``sys.path``.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"official checkout not found: {root}")
    for name in [n for n in sys.modules if n.split(".")[0] in clash]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        with stubbed_cuda_extensions():
            return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


def find_official(base: Path | None, name: str) -> Path | None:
    """``base/name`` (a checkout folder named like the repository), or None without a base."""
    if base is None:
        return None
    path = base / name
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: put the official {name} checkout there (git clone)")
    return path


def import_official_file(path: Path, name: str) -> types.ModuleType:
    """Import one official source file by path (when its package ``__init__`` needs extra dependencies)."""
    if not path.is_file():
        raise FileNotFoundError(f"official source file not found: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with stubbed_cuda_extensions():
        spec.loader.exec_module(module)
    return module
