"""Which compute precision to run e4e in, on which device: low precision only where it is fast.

bf16 on a CPU is fast only when oneDNN has native bf16 kernels (AVX512-BF16 or
AMX); elsewhere PyTorch emulates it and one inversion takes minutes instead of
about a second (measured 181x slower than fp32 on an AVX2 CPU). fp16 on a CPU
needs AVX512-FP16/AMX-FP16 likewise. On CUDA both are fast (bf16 from Ampere on).
:func:`resolve_precision` turns the user's choice into the dtype actually used
and, when it differs or was chosen automatically, a sentence for the node's info.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

__all__ = ["PRECISIONS", "Precision", "cpu_low_precision_support", "fast_low_precision", "resolve_precision"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class Precision:
    """The resolved compute precision.

    Attributes:
        requested: what the user chose (``auto``, ``fp32``, ``fp16`` or ``bf16``).
        dtype: the dtype the networks run in.
        note: one sentence for the node's info output ("" when the request was honoured as is).
    """

    requested: str
    dtype: torch.dtype
    note: str = ""

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]


def cpu_low_precision_support() -> dict[str, bool]:
    """``{"bf16": ..., "fp16": ...}``: whether this CPU's oneDNN has native kernels for them.

    Uses PyTorch's own oneDNN probes; a PyTorch without them (or without oneDNN)
    counts as no support.
    """
    support = {"bf16": False, "fp16": False}
    if not torch.backends.mkldnn.is_available():
        return support
    ops = torch.ops.mkldnn
    for name, probe in (("bf16", "_is_mkldnn_bf16_supported"), ("fp16", "_is_mkldnn_fp16_supported")):
        try:
            support[name] = bool(getattr(ops, probe)())
        except (AttributeError, RuntimeError):
            support[name] = False
    return support


def fast_low_precision(device: torch.device) -> torch.dtype | None:
    """The low-precision dtype ``device`` runs fast (fp16 on CUDA, bf16 on a CPU with oneDNN bf16), or None."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        support = cpu_low_precision_support()
        return torch.bfloat16 if support["bf16"] else (torch.float16 if support["fp16"] else None)
    return None


def _is_fast(dtype: torch.dtype, device: torch.device) -> bool:
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_low_precision_support()[_NAMES[dtype]]
    return True  # other backends (MPS, XPU): the user's choice is taken as is


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """Map ``auto``/``fp32``/``fp16``/``bf16`` to the dtype to run on ``device``.

    ``auto`` picks :func:`fast_low_precision` or fp32. An explicit fp16/bf16 that
    this device would only emulate falls back to fp32 and says so in ``note``
    (also logged): that is slower by two orders of magnitude, never what a user wants.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS`.
    """
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    where = "this CPU" if device.type == "cpu" else f"this {device.type.upper()} device"
    if requested == "auto":
        low = fast_low_precision(device)
        if low is None:
            return Precision(requested, torch.float32, f"e4e precision auto: fp32 (no fast bf16/fp16 on {where})")
        why = "CUDA" if device.type == "cuda" else "oneDNN reports native support"
        return Precision(requested, low, f"e4e precision auto: {_NAMES[low]} ({why})")
    dtype = _DTYPES[requested]
    if _is_fast(dtype, device):
        return Precision(requested, dtype)
    note = (
        f"e4e precision {requested} requested, but {where} has no native {requested} kernels (it would be about 100x "
        "slower): ran in fp32"
    )
    logger.warning(note)
    return Precision(requested, torch.float32, note)
