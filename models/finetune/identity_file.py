"""One ``.safetensors`` file per trained identity (FaceA-Net, SeFi-IDE), written atomically.

Layout: the tensors of the identity (names chosen by the method; a FaceA file keeps its LoRA in
ComfyUI's ``LORA_MODEL`` key format so a stock LoraLoader reads that part) and string metadata:

* ``format`` = ``likeness-identity``, ``format_version`` = ``1``, ``kind`` = ``facea`` | ``sefi``;
* ``meta``: JSON object, method-specific (prompts, class word, LoRA rank, recipe, ...);
* ``provenance``: JSON object with the fields of :class:`Provenance`.

Writing goes to a hidden temporary file in the target folder, which then replaces the target
with ``os.replace`` (atomic on POSIX and Windows for the same volume). An exception or
interruption at any point removes the temporary file, so a reader never sees half a file and an
interrupted save leaves the folder as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "Provenance",
    "save_identity_file",
    "load_identity_file",
    "read_identity_header",
    "image_sha256",
    "tensors_sha256",
    "utc_now",
]

logger = logging.getLogger(__name__)

FORMAT = "likeness-identity"
FORMAT_VERSION = 1
KINDS = ("facea", "sefi")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds and a ``Z`` suffix."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Provenance:
    """Where a trained identity came from.

    Attributes:
        photo_sha256: sha256 (hex) of each reference photo (see :func:`image_sha256`).
        steps: optimisation steps the identity has been trained for in total.
        base_model_sha256: sha256 (hex) of the base model it was trained on (see
            :func:`tensors_sha256`), or ``""`` when unknown.
        created_utc: ISO 8601 UTC time stamp of the training.
        extra: anything else, JSON-serialisable (base model file name, transplants, ...).
    """

    photo_sha256: list[str]
    steps: int
    base_model_sha256: str
    created_utc: str = field(default_factory=utc_now)
    extra: dict = field(default_factory=dict)


def image_sha256(image: torch.Tensor | np.ndarray) -> str:
    """sha256 of a photo as 8-bit RGB: shape ``[H,W,3]`` float in [0, 1] (ComfyUI IMAGE element) or uint8.

    The hash covers ``"HxW"`` and the row-major uint8 bytes, so it does not depend on the float
    dtype the photo travelled in.
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise ValueError(f"image_sha256 takes one [H,W,C>=3] image, got shape {tuple(arr.shape)}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    h = hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict: each key (sorted), dtype, shape and raw bytes, as stored.

    Used as the base-model hash of an identity (the UNet weights it was trained on); the same
    weights in another dtype hash differently, which is why callers record the dtype too.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach()
        h.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def _umask() -> int:
    """The process umask without changing it (Linux: /proc; elsewhere the common 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"identity kind must be one of {KINDS}, got {kind!r}")


def save_identity_file(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    meta: Mapping[str, Any],
    provenance: Provenance,
) -> Path:
    """Write an identity file atomically (temporary file in the same folder + ``os.replace``).

    Args:
        path: target ``.safetensors`` path; its folder is created if missing.
        tensors: ``{name: tensor}``; saved contiguous, on the CPU, in their own dtype.
        kind: ``"facea"`` or ``"sefi"``.
        meta: method-specific JSON-serialisable metadata.
        provenance: see :class:`Provenance`.

    Returns:
        The path written.
    """
    _check_kind(kind)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"identity files are .safetensors; got {path.name!r}")
    if not tensors:
        raise ValueError("an identity file needs at least one tensor")
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "meta": json.dumps(dict(meta), sort_keys=True),
        "provenance": json.dumps(asdict(provenance), sort_keys=True),
    }
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        save_file(data, str(tmp), metadata=header)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("saved %s identity %s (%d tensors)", kind, path, len(data))
    return path


def _field(path: Path, obj: Mapping[str, Any], name: str, typ: type, where: str) -> Any:
    if name not in obj:
        raise CheckpointError(
            f"{path}: identity field '{where}{name}' is missing. The file is damaged or was not written by "
            "Likeness; train and save the identity again."
        )
    value = obj[name]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise CheckpointError(f"{path}: identity field '{where}{name}' must be {typ.__name__}, got {value!r}.")
    return value


def _json(path: Path, header: Mapping[str, str], name: str) -> dict:
    raw = header.get(name)
    if raw is None:
        raise CheckpointError(f"{path}: identity metadata '{name}' is missing; the file is damaged. Save it again.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: identity metadata '{name}' is not valid JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: identity metadata '{name}' must be a JSON object, got {type(value).__name__}.")
    return value


def _provenance(path: Path, raw: dict) -> Provenance:
    photos = _field(path, raw, "photo_sha256", list, "provenance.")
    bad = [p for p in photos if not (isinstance(p, str) and _HEX64.match(p))]
    if bad:
        raise CheckpointError(f"{path}: identity field 'provenance.photo_sha256' holds non-sha256 values {bad[:3]}.")
    steps = _field(path, raw, "steps", int, "provenance.")
    if steps < 0:
        raise CheckpointError(f"{path}: identity field 'provenance.steps' must be >= 0, got {steps}.")
    base = _field(path, raw, "base_model_sha256", str, "provenance.")
    if base and not _HEX64.match(base):
        raise CheckpointError(f"{path}: identity field 'provenance.base_model_sha256' is not a sha256: {base!r}.")
    created = _field(path, raw, "created_utc", str, "provenance.")
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: identity field 'provenance.created_utc' is not a date: {created!r}.") from exc
    extra = _field(path, raw, "extra", dict, "provenance.")
    return Provenance(list(photos), steps, base, created, extra)


def read_identity_header(path: str | Path) -> dict[str, str]:
    """The raw string metadata of a safetensors file (no tensors are read)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable .safetensors file ({exc}). Save the identity again.") from exc


def load_identity_file(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict, Provenance]:
    """Read and validate an identity file.

    Args:
        path: the ``.safetensors`` file.
        kind: the kind the caller expects (``"facea"`` or ``"sefi"``).

    Returns:
        ``(tensors, meta, provenance)`` with tensors on the CPU, bit-identical to what was saved.

    Raises:
        CheckpointError: naming the file and the field for every problem (not an identity file,
            another kind, a newer format version, missing or malformed fields).
    """
    _check_kind(kind)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"identity file {path} does not exist.")
    header = read_identity_header(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a Likeness identity file (metadata 'format' is {header.get('format')!r}, expected "
            f"{FORMAT!r}). A plain LoRA goes into a LoraLoader, not here."
        )
    version = header.get("format_version", "")
    if not version.isdigit() or int(version) < 1:
        raise CheckpointError(f"{path}: identity field 'format_version' must be a positive integer, got {version!r}.")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer Likeness (identity format {version}; this one reads up to "
            f"{FORMAT_VERSION}). Update Likeness."
        )
    if header.get("kind") != kind:
        raise CheckpointError(
            f"{path} holds a {header.get('kind')!r} identity, not a {kind!r} one; load it with the "
            f"{header.get('kind')!r} loader."
        )
    meta = _json(path, header, "meta")
    provenance = _provenance(path, _json(path, header, "provenance"))
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return tensors, meta, provenance
