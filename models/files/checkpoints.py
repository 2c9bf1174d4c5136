"""The one safe loader for every checkpoint Likeness reads, and key validation.

Formats are recognised by their first bytes, never by file name:

* safetensors (8-byte little-endian header length, then a JSON header),
* PyTorch zip archives and legacy PyTorch pickles, read with
  ``torch.load(weights_only=True, map_location="cpu")`` only,
* NumPy ``.npy`` (``allow_pickle=False``) and JSON.

Nothing here ever unpickles arbitrary objects and nothing falls back to unsafe
loading: a file that needs it is refused with a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import logging
import pickle
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from ..errors import CheckpointError, MissingModelError, a_or_an
from .registry import file_problem

__all__ = [
    "load_file",
    "flatten",
    "unflatten_prefix",
    "validate_shapes",
    "identify",
    "CONTEXT_FAMILIES",
    "family_name",
]

logger = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_MAX_REPORTED = 5

#: Stable Diffusion families by the UNet's cross-attention context width.
CONTEXT_FAMILIES: dict[int, str] = {768: "SD1.5", 1024: "SD2.x", 2048: "SDXL"}


def family_name(context_width: int | None, unknown: str | None = None) -> str:
    """``"SD1.5"``/``"SD2.x"``/``"SDXL"`` for a context width, else ``unknown`` (default "context width N")."""
    if context_width in CONTEXT_FAMILIES:
        return CONTEXT_FAMILIES[context_width]
    return unknown if unknown is not None else f"context width {context_width}"


def _sniff(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(16)
    if len(head) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes). Download it again.")
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2: legacy (non-zip) torch.save
        return "torch-legacy"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    raise CheckpointError(
        f"{path} is not a checkpoint Likeness can read (first bytes {head[:8]!r}). "
        "Expected .safetensors, a PyTorch .pt/.pth/.bin, .npy or .json file."
    )


def load_file(path: str | Path) -> Any:
    """Load a checkpoint or data file safely, on the CPU.

    Args:
        path: file to read.

    Returns:
        For safetensors a ``{name: tensor}`` dict; for PyTorch files whatever
        containers of tensors the file holds (dicts, lists, tensors, numbers,
        strings); for ``.npy`` a NumPy array; for JSON the parsed value.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: the file is truncated, corrupt, not a known format,
            or would need unsafe unpickling (code execution) to load.
    """
    path = Path(path)
    if not path.is_file():
        problem = file_problem(path)
        raise MissingModelError(f"{problem}. Replace it with the model file." if problem else f"{path} does not exist.")
    kind = _sniff(path)
    size = path.stat().st_size
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(str(path), device="cpu")
        if kind == "npy":
            return _load_npy(path)
        if kind == "json":
            with path.open("r", encoding="utf-8") as fh:
                return json.load(fh)
        if kind == "torch-zip" and not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} ({size:,} bytes) is a truncated or damaged PyTorch archive. "
                "The download was probably interrupted: download it again."
            )
        with path.open("rb") as fh:  # a file object: torch picks no loader by suffix
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {path}: it contains Python objects other than tensors "
            f"and plain containers ({_first_line(exc)}). Likeness only loads weights "
            "(torch.load with weights_only=True) because a pickle can run arbitrary "
            "code. Use the official file, or convert it to .safetensors."
        ) from exc
    except CheckpointError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, struct.error, SafetensorError) as exc:
        raise CheckpointError(
            f"{path} ({size:,} bytes) could not be read as {kind}: {_first_line(exc)}. "
            "The file is probably truncated or corrupt: download it again."
        ) from exc


def _load_npy(path: Path) -> np.ndarray:
    """A NumPy array file, refusing object arrays (a pickle inside) with their own message."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = header(fh)  # the header only: no data is read
    if dtype.hasobject:
        raise CheckpointError(
            f"Refusing to load {path}: it is a NumPy array of Python objects (dtype {dtype}), saved with pickle. "
            "Likeness never unpickles data files because a pickle can run arbitrary code. Save the numbers as "
            "a float array (np.save(path, array.astype(np.float32)))."
        )
    return np.load(path, allow_pickle=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested dicts of tensors to ``{"a.b.c": tensor}``.

    Lists and tuples are indexed (``"bank.0"``); NumPy arrays become tensors;
    other leaves (strings, numbers, None) are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, np.ndarray):
        out[prefix] = torch.from_numpy(obj)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}.{i}" if prefix else str(i)))
    return out


def unflatten_prefix(flat: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under ``prefix.`` with the prefix stripped: a module's state dict."""
    cut = prefix + "."
    return {k[len(cut) :]: v for k, v in flat.items() if k.startswith(cut)}


def validate_shapes(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    *,
    what: str,
    source: str | Path,
) -> None:
    """Check that ``state`` has exactly the expected keys and shapes.

    Args:
        state: the state dict read from the file (flattened keys).
        expected: ``{key: shape}`` of the architecture the caller builds.
        what: human name of the expected model, e.g. "W+ adapter for SD1.5".
        source: the file, for the message.

    Raises:
        CheckpointError: naming the first missing, unexpected and mismatching
            keys, and what the file looks like instead (see :func:`identify`).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs expected {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{source} is not {a_or_an(what)} checkpoint."]
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches, first: " + "; ".join(mismatched[:_MAX_REPORTED]))
    if missing:
        parts.append(f"{len(missing)} missing keys, first: " + ", ".join(missing[:_MAX_REPORTED]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: " + ", ".join(unexpected[:_MAX_REPORTED]))
    parts.append(f"The file looks like: {identify(state)}.")
    raise CheckpointError(" ".join(parts))


def identify(state: Mapping[str, torch.Tensor]) -> str:
    """Describe a flattened state dict by its keys and shapes, for error messages."""
    keys = list(state)
    if not keys:
        return "an empty file (no tensors)"

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    def width(key_suffix: str) -> int | None:
        for k in keys:
            if k.endswith(key_suffix):
                return int(state[k].shape[-1])
        return None

    if has("wplus_adapter.") or has("w_proj."):
        ctx = width("to_k_wplus.weight")
        return f"a W+ adapter for {family_name(ctx)} (context width {ctx})"
    if has("image_style_proj."):
        return "a PSTF-AttControl checkpoint (SDXL; image_proj + image_style_proj + ip_adapter)"
    if has("image_proj.") and has("ip_adapter."):
        ctx = width("to_k_ip.weight")
        return f"an IP-Adapter/InstantID checkpoint for {family_name(ctx)}"
    if has("state_dict.encoder.") or has("encoder.styles."):
        return "an e4e/pSp encoder checkpoint"
    if has("g_ema.") or has("decoder.style.") or has("style.1.weight"):
        return "a StyleGAN2 generator (rosinality layout)"
    if has("model.diffusion_model."):
        ctx = None
        for k in keys:
            if k.endswith("attn2.to_k.weight") and k.startswith("model.diffusion_model."):
                ctx = int(state[k].shape[1])
                break
        return f"a full Stable Diffusion checkpoint ({family_name(ctx, 'a diffusion model')})"
    tops = sorted({k.split(".", 1)[0] for k in keys})
    return f"an unknown layout with {len(keys)} tensors, top-level keys {tops[:8]}"
