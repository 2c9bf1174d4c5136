"""``WPlusCodes``: the value on a ``WPLUS`` wire, and its shareable safetensors file.

An identity is a batch of absolute StyleGAN2 W+ codes ([B,18,512], e4e output
+ latent_avg) with one label per code and provenance metadata, so it can be
saved, shared and reloaded without the photo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file

from ..errors import CheckpointError, LikenessError

__all__ = ["WPlusCodes", "save_wplus", "load_wplus", "WPLUS_ROWS", "WPLUS_DIM"]

WPLUS_ROWS = 18
WPLUS_DIM = 512
_FORMAT = "likeness.wplus.v1"


@dataclass(frozen=True)
class WPlusCodes:
    """A batch of absolute W+ codes.

    Attributes:
        codes: ``[B,18,512]`` float32 on the CPU (B may be 0 when every input was skipped).
        labels: one label per code (e.g. ``"age=+2.0"`` after a sweep).
        meta: provenance (source image hash, alignment recipe, model file, ...), JSON-serialisable.
        warnings: human-readable notes about skipped inputs (no-face policy ``skip``/``pass-through``).
    """

    codes: torch.Tensor
    labels: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        codes = self.codes
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (WPLUS_ROWS, WPLUS_DIM):
            raise LikenessError(f"a W+ code must be [B,18,512]; got {tuple(self.codes.shape)}")
        object.__setattr__(self, "codes", codes.detach().to("cpu", torch.float32))
        labels = tuple(self.labels) or tuple(f"#{i}" for i in range(codes.shape[0]))
        if len(labels) != codes.shape[0]:
            raise LikenessError(f"{len(labels)} labels for {codes.shape[0]} W+ codes")
        object.__setattr__(self, "labels", labels)

    @property
    def batch(self) -> int:
        return int(self.codes.shape[0])

    def with_codes(self, codes: torch.Tensor, labels: tuple[str, ...] | None = None, **meta) -> WPlusCodes:
        """A copy holding new codes (same provenance plus ``meta``)."""
        return replace(
            self, codes=codes, labels=tuple(labels) if labels is not None else (), meta={**self.meta, **meta}
        )


def save_wplus(path: str | Path, wplus: WPlusCodes) -> Path:
    """Write ``wplus`` as safetensors: tensor ``wplus`` [B,18,512] + metadata (labels, provenance)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": _FORMAT,
        "labels": json.dumps(list(wplus.labels)),
        "meta": json.dumps(wplus.meta, default=str),
        "latent_space": "stylegan2-ffhq-wplus (absolute, e4e + latent_avg)",
    }
    save_file({"wplus": wplus.codes.contiguous()}, str(path), metadata=metadata)
    return path


def load_wplus(path: str | Path) -> WPlusCodes:
    """Read a W+ file: ours (safetensors), or an official ``.pth``/``.pt`` tensor [1,18,512] (w-plus-adapter test data).

    Raises:
        CheckpointError: the file holds no [B,18,512] tensor.
    """
    from ..files.checkpoints import load_file

    path = Path(path)
    data = load_file(path)
    meta: dict = {"file": path.name}
    labels: tuple[str, ...] = ()
    if isinstance(data, dict) and "wplus" in data and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        labels = tuple(json.loads(header.get("labels", "[]")))
        meta.update(json.loads(header.get("meta", "{}")))
        tensor = _load_safetensors(str(path))["wplus"]
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
    if tensor.ndim != 3 or tuple(tensor.shape[1:]) != (WPLUS_ROWS, WPLUS_DIM):
        raise CheckpointError(f"{path} holds a tensor of shape {tuple(tensor.shape)}, not a W+ code [B,18,512].")
    return WPlusCodes(tensor.float(), labels if len(labels) == tensor.shape[0] else (), meta)
