"""``WPlusCodes``: the value on a ``WPLUS`` wire, and its shareable safetensors file.

An identity is a batch of absolute StyleGAN2 W+ codes ([B,18,512], e4e output
+ latent_avg) with one label per code and provenance metadata, so it can be
saved, shared and reloaded without the photo.

A batch is never empty. Under the no-face policy ``pass-through`` an image without a face keeps its
place in the batch as an *absent* item (zeros, listed in :attr:`WPlusCodes.absent`): downstream nodes
leave it alone (Apply W+ Adapter does not condition that latent; Save W+ does not write it), so the batch
still lines up with the images. ``skip`` drops the image instead.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, InputError, LikenessError, a_or_an
from ..validation import check_wplus

__all__ = [
    "WPlusCodes",
    "save_wplus",
    "load_wplus",
    "wplus_input",
    "sanitize_prefix",
    "WPLUS_ROWS",
    "WPLUS_DIM",
    "WPLUS_FORMAT",
]

WPLUS_ROWS = 18
WPLUS_DIM = 512
WPLUS_FORMAT = "likeness.wplus.v1"


@dataclass(frozen=True)
class WPlusCodes:
    """A batch of absolute W+ codes.

    Attributes:
        codes: ``[B,18,512]`` float32 on the CPU, B >= 1, finite and within ±:data:`..validation.WPLUS_ABS_LIMIT`.
        labels: one label per code (e.g. ``"age=+2.0"`` after a sweep).
        meta: provenance (source image hash, alignment recipe, model file, ...), JSON-serialisable.
        warnings: human-readable notes about skipped inputs (no-face policy ``skip``/``pass-through``).
        absent: batch indices that hold no code (an image passed through without a face); their rows are zeros.
    """

    codes: torch.Tensor
    labels: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    absent: tuple[int, ...] = ()

    def __post_init__(self):
        codes = self.codes
        if not isinstance(codes, torch.Tensor):
            raise LikenessError(f"a W+ code must be a tensor [B,18,512]; got {type(codes).__name__}")
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (WPLUS_ROWS, WPLUS_DIM):
            raise LikenessError(f"a W+ code must be [B,18,512]; got {tuple(self.codes.shape)}")
        if codes.shape[0] == 0:
            raise LikenessError(
                "a W+ batch needs at least one code; an image without a face is either dropped (skip, and the node "
                "fails when nothing is left) or kept as an absent code (pass-through)"
            )
        codes = codes.detach().to("cpu", torch.float32)
        absent = tuple(sorted({int(i) for i in self.absent}))
        if any(not 0 <= i < codes.shape[0] for i in absent):
            raise LikenessError(f"absent W+ items {list(absent)} lie outside the batch of {codes.shape[0]}")
        if absent:
            codes = codes.clone()
            codes[list(absent)] = 0.0
        check_wplus(codes, "W+ code", source=self.meta.get("file") if isinstance(self.meta, dict) else None)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "absent", absent)
        labels = tuple(self.labels) or tuple(f"#{i}" for i in range(codes.shape[0]))
        if len(labels) != codes.shape[0]:
            raise LikenessError(f"{len(labels)} labels for {codes.shape[0]} W+ codes")
        object.__setattr__(self, "labels", labels)

    @property
    def batch(self) -> int:
        """Items in the batch, absent ones included."""
        return int(self.codes.shape[0])

    @property
    def present(self) -> tuple[int, ...]:
        """Indices of the items that hold a code."""
        return tuple(i for i in range(self.batch) if i not in self.absent)

    def with_codes(
        self, codes: torch.Tensor, labels: tuple[str, ...] | None = None, absent: tuple[int, ...] | None = None, **meta
    ) -> WPlusCodes:
        """A copy holding new codes (same provenance plus ``meta``; ``absent`` kept unless given)."""
        return replace(
            self,
            codes=codes,
            labels=tuple(labels) if labels is not None else (),
            meta={**self.meta, **meta},
            absent=self.absent if absent is None else tuple(absent),
        )

    def only_present(self, where: str) -> WPlusCodes:
        """The items that hold a code (absent ones dropped).

        Raises:
            InputError: every item is absent; the message names ``where`` and why (the warnings).
        """
        keep = self.present
        if not keep:
            why = " ".join(self.warnings) or "no face was found in its image(s)"
            raise InputError(
                f"{where}: the W+ input holds no code, only {self.batch} absent item(s) ({why}). Give a photo with "
                "a face to Invert Face, or set its on_no_face to 'error' to see which image has none."
            )
        if len(keep) == self.batch:
            return self
        return replace(self, codes=self.codes[list(keep)], labels=tuple(self.labels[i] for i in keep), absent=())


def wplus_input(value: Any, where: str) -> WPlusCodes:
    """A ``WPLUS`` node input, checked again (finite, sane magnitude); a bare tensor [B,18,512] is wrapped.

    Raises:
        InputError: naming ``where``: not W+ codes, or values that fail :func:`..validation.check_wplus`.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim not in (2, 3) or tuple(value.shape[-2:]) != (WPLUS_ROWS, WPLUS_DIM) or value.numel() == 0:
            raise InputError(f"{where}: a tensor of shape {tuple(value.shape)} is not a W+ code [B,18,512].")
        check_wplus(value.float(), where)
        return WPlusCodes(value)
    if not isinstance(value, WPlusCodes):
        raise InputError(
            f"{where}: got {a_or_an(type(value).__name__)}, not Likeness W+ codes. Connect Invert Face, Load W+ or an "
            "editing node."
        )
    check_wplus(value.codes, where, source=value.meta.get("file"))
    return value


_UNSAFE = re.compile(r"[^\w.\- %]+")
_MAX_PART_BYTES = 100  # a file name stays far below the 255 bytes file systems allow, counter and suffix included
_MAX_DEPTH = 8
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def sanitize_prefix(prefix: str) -> str:
    """A relative ``sub/folders/name`` prefix safe on every file system.

    Unsafe characters (control characters and NUL included) become ``_``; ``.``/``..``/empty parts go;
    each part is cut to 100 bytes of UTF-8 and the depth to 8 folders; Windows device names (``CON``,
    ``NUL``, ...) get a leading ``_``. Never empty: ``identity`` when nothing is left.
    """
    parts = []
    for raw in str(prefix).replace("\\", "/").split("/"):
        part = _UNSAFE.sub("_", raw).strip(" .")
        part = part.encode("utf-8")[:_MAX_PART_BYTES].decode("utf-8", "ignore").strip(" .")
        if part.split(".")[0].lower() in _RESERVED:
            part = "_" + part
        if part:
            parts.append(part)
    return "/".join(parts[-_MAX_DEPTH:]) or "identity"


def save_wplus(path: str | Path, wplus: WPlusCodes) -> Path:
    """Write the present codes of ``wplus`` as safetensors: tensor ``wplus`` [B,18,512] + metadata.

    The file is written to a temporary name in the same folder and renamed, so an interrupted save
    leaves no partial file.

    Raises:
        InputError: ``wplus`` holds no code (every item absent).
    """
    path = Path(path)
    wplus = wplus.only_present(f"Save W+ to {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": WPLUS_FORMAT,
        "labels": json.dumps(list(wplus.labels)),
        "meta": json.dumps(wplus.meta, default=str),
        "latent_space": "stylegan2-ffhq-wplus (absolute, e4e + latent_avg)",
    }
    fd, tmp = tempfile.mkstemp(prefix=".likeness-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"wplus": wplus.codes.contiguous()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _json_field(header: dict, key: str, default: str, kind: type, path: Path, example: str) -> Any:
    """One JSON metadata field of a W+ file, parsed and type-checked; the error names the file and the field."""
    text = header.get(key, default)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: metadata field {key!r} is not valid JSON ({exc.msg} at character {exc.pos}): {text!r:.80}. "
            f"It should hold {example}. Save the identity again with Likeness Save W+."
        ) from None
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path}: metadata field {key!r} holds {a_or_an(type(value).__name__)} ({text!r:.80}), not {example}. "
            "Save the identity again with Likeness Save W+."
        )
    return value


def _read_likeness_file(path: Path) -> tuple[torch.Tensor, tuple[str, ...], dict]:
    """Tensor, labels and provenance of a Likeness ``.safetensors`` W+ file, every metadata field checked."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensor = fh.get_tensor("wplus")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} could not be read as safetensors: {exc}. Save it again.") from exc
    fmt = header.get("format", WPLUS_FORMAT)
    if fmt != WPLUS_FORMAT:
        raise CheckpointError(
            f"{path}: metadata field 'format' is {fmt!r:.60}, not {WPLUS_FORMAT!r}: this is not a Likeness W+ file "
            "(or one from a newer Likeness; update the pack)."
        )
    labels = _json_field(header, "labels", "[]", list, path, 'a JSON list of strings, one per code, e.g. ["image 0"]')
    if not all(isinstance(x, str) for x in labels):
        raise CheckpointError(f"{path}: metadata field 'labels' must list strings; got {labels!r:.80}.")
    if labels and tensor.ndim == 3 and len(labels) != tensor.shape[0]:
        raise CheckpointError(
            f"{path}: metadata field 'labels' has {len(labels)} labels for {tensor.shape[0]} codes. Save it again."
        )
    meta = _json_field(header, "meta", "{}", dict, path, 'a JSON object, e.g. {"recipe": "wplus_adapter"}')
    return tensor, tuple(labels), meta


def load_wplus(path: str | Path) -> WPlusCodes:
    """Read a W+ file: ours (safetensors), or an official ``.pth``/``.pt`` tensor [1,18,512] (w-plus-adapter test data).

    Raises:
        CheckpointError: the file holds no [B,18,512] tensor, a metadata field is malformed, or the
            values are not finite / beyond the sane magnitude (the message names the file and the field).
    """
    from ..files.checkpoints import load_file

    path = Path(path)
    data = load_file(path)
    meta: dict = {}
    labels: tuple[str, ...] = ()
    if isinstance(data, dict) and "wplus" in data and path.suffix == ".safetensors":
        tensor, labels, meta = _read_likeness_file(path)
    elif isinstance(data, torch.Tensor):
        tensor = data
    elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        tensor = next(iter(data.values()))
    else:
        raise CheckpointError(
            f"{path} holds no W+ code: expected a [B,18,512] tensor (a Likeness .safetensors W+ file)."
        )
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tuple(tensor.shape[1:]) != (WPLUS_ROWS, WPLUS_DIM) or tensor.shape[0] == 0:
        raise CheckpointError(f"{path} holds a tensor of shape {tuple(tensor.shape)}, not a W+ code [B,18,512].")
    if not tensor.is_floating_point():
        raise CheckpointError(f"{path} holds a tensor of dtype {tensor.dtype}; a W+ code is floating point.")
    try:
        check_wplus(tensor.float(), f"W+ file {path}", fix="The file is damaged: invert the photo and save it again.")
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    meta["file"] = path.name
    return WPlusCodes(tensor.float(), labels, meta)
