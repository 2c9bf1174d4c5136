"""Tiny random models and a synthetic dataset, so every trainer runs end to end on a CPU in seconds.

* :func:`tiny_unet`: a diffusers ``UNet2DConditionModel`` with the block layout of the family (SD1.5:
  3 cross-attention down blocks + a plain one, 16 attn2 sites at the SD1.5 processor indices; SDXL: a
  plain down block + 2 cross-attention ones, ``text_time`` added embeddings), the family's **context
  width** (768 / 2048), tiny channel widths (32/64/128) and the initialisation :data:`SMOKE_INIT`.
* :func:`tiny_vae`: an ``AutoencoderKL`` with 4 levels (the SD latent factor 8) and 8-16 channels.
* :class:`SmokeTextEncoder`: bytes -> frozen random embeddings of the family's context width (+ a pooled
  vector for SDXL); no tokenizer files, no transformers.
* :func:`write_smoke_dataset`: a prepared dataset (the layout of :mod:`.dataset`) whose images are a
  smooth function of their W+ codes, so an adapter has something to learn.
* :func:`write_smoke_wplus_bank`: a stage-2 direction bank, GANSpace PCA and configs in the official
  file formats (random, unit directions).

Every tensor is seeded; the same seed gives the same models and data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import CONTEXT_DIMS, SCHEDULER_CONFIG, TextConditioning
from .dataset import ItemRecord, append_record, write_dataset_info, write_item

__all__ = [
    "SMOKE_WIDTHS",
    "SMOKE_INIT",
    "tiny_unet",
    "tiny_vae",
    "SmokeTextEncoder",
    "smoke_scheduler",
    "write_smoke_dataset",
    "write_smoke_wplus_bank",
    "smoke_base",
    "SMOKE_RESAMPLER",
    "smoke_controlnet",
    "write_smoke_pstf_files",
]

SMOKE_WIDTHS = (32, 64, 128, 128)


#: Smoke-UNet initialisation: GroupNorm groups, and gains on the attn2 output projections and on the output
#: conv. With them the untrained prediction is far from the noise (loss about 1.9) and the cross-attention
#: sites, where both adapters act, carry a share of the output, so 30 CPU steps show the adapter learning
#: (loss about 1.1) while a run at learning rate ~0 stays flat (tests/unit/test_training_wplus.py).
SMOKE_INIT = {"groups": 8, "attn2_gain": 5.0, "out_gain": 3.0}


def tiny_unet(family: str, seed: int = 0) -> nn.Module:
    """A random diffusers UNet of ``family`` (``"sd15"`` / ``"sdxl"``) with tiny widths, float32, CPU."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    common = dict(sample_size=8, layers_per_block=2, norm_num_groups=SMOKE_INIT["groups"])
    if family == "sd15":
        unet = UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=SMOKE_WIDTHS,
            cross_attention_dim=CONTEXT_DIMS["sd15"],
            attention_head_dim=8,
            **common,
        )
    else:
        unet = UNet2DConditionModel(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=SMOKE_WIDTHS[:3],
            transformer_layers_per_block=(1, 1, 1),
            attention_head_dim=(2, 4, 8),
            cross_attention_dim=CONTEXT_DIMS["sdxl"],
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + SmokeTextEncoder.POOLED_SDXL,
            **common,
        )
    with torch.no_grad():
        for name, mod in unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                mod.weight.mul_(SMOKE_INIT["attn2_gain"])
        unet.conv_out.weight.mul_(SMOKE_INIT["out_gain"])
    return unet


def tiny_vae(seed: int = 0, scaling_factor: float = 0.18215) -> nn.Module:
    """A random 4-level ``AutoencoderKL`` (latent = image / 8, 4 channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def smoke_scheduler():
    """The families' DDPM training schedule (diffusers ``DDPMScheduler``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(SCHEDULER_CONFIG)


class SmokeTextEncoder(nn.Module):
    """Prompt bytes -> ``[B, 77, width]`` frozen random embeddings (+ ``[B, 1280]`` pooled for SDXL).

    The empty prompt gives the all-padding context, as a real encoder gives one fixed "null" context.

    Args:
        family: ``"sd15"`` or ``"sdxl"``.
        seed: weight seed.
    """

    POOLED_SDXL = 1280
    LENGTH = 77

    def __init__(self, family: str, seed: int = 0) -> None:
        super().__init__()
        width = CONTEXT_DIMS[family]
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(257, width, generator=gen), requires_grad=False)
        self.pos = nn.Parameter(torch.randn(self.LENGTH, width, generator=gen) * 0.1, requires_grad=False)
        self.pool = None
        if family == "sdxl":
            self.pool = nn.Parameter(torch.randn(width, self.POOLED_SDXL, generator=gen) / math.sqrt(width), False)

    def forward(self, prompts: list[str]) -> TextConditioning:
        ids = torch.zeros(len(prompts), self.LENGTH, dtype=torch.long, device=self.embed.device)
        for row, text in enumerate(prompts):
            data = list(text.encode("utf-8"))[: self.LENGTH - 1]
            ids[row, 1 : 1 + len(data)] = torch.tensor(data, dtype=torch.long) + 1
        ctx = torch.nn.functional.layer_norm(self.embed[ids] + self.pos, (self.embed.shape[1],))
        pooled = None if self.pool is None else ctx.mean(1) @ self.pool
        return TextConditioning(ctx, pooled)


def _code_image(w: np.ndarray, size: int, centre: tuple[float, float], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """An image whose background and "face" disc colours are smooth functions of W+ rows 0 and 8; and the disc mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = 0.5 + 0.4 * np.tanh(w[0, :3])
    fg = 0.5 + 0.4 * np.tanh(w[8, :3])
    ramp = (xx / size)[..., None] * (0.5 + 0.4 * np.tanh(w[4, :3]))
    disc = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2).astype(np.float32)
    img = (bg * (1 - disc[..., None]) + fg * disc[..., None]) * 0.8 + 0.2 * ramp
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), (disc * 255).astype(np.uint8)


def write_smoke_dataset(root: Path, method: str, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """A prepared dataset of ``n`` synthetic items (both W+ codes, embedding, keypoints as the method needs).

    Returns:
        ``root``. An existing complete smoke dataset is kept.
    """
    root = Path(root)
    if (root / "dataset.json").is_file():
        return root
    rng = np.random.default_rng(seed)
    for k in range(n):
        w = rng.standard_normal((18, 512)).astype(np.float32)
        aligned, amask = _code_image(w, size, (size / 2, size / 2), size / 3)
        tensors = {"wplus": torch.from_numpy(w), "wplus_whitened": torch.from_numpy(w * 0.9)}
        images = {"aligned.png": aligned, "aligned_mask.png": amask}
        if method == "wplus":
            photo, pmask = _code_image(w, size + size // 2, (size * 0.7, size * 0.6), size / 4)
            images.update({"photo.png": photo, "photo_mask.png": pmask})
        else:
            tensors = {"wplus": tensors["wplus"], "embedding": torch.from_numpy(w[2] * 10.0)}
            kps = np.array([[0.38, 0.42], [0.62, 0.42], [0.5, 0.55], [0.41, 0.68], [0.59, 0.68]]) * size
            tensors["kps"] = torch.from_numpy(kps.astype(np.float32))
        item_id = f"smoke_{k:03d}.png"
        caption = [f"a person number {k}", "a person"]
        write_item(root, item_id, images, tensors, {"source": item_id, "caption": json.dumps(caption)})
        append_record(
            root, ItemRecord(item_id, item_id, f"smoke{seed}-{k}", "ok", "", 1, "synthetic", "synthetic", caption)
        )
    write_dataset_info(root, method, {"method": method, "smoke": True, "size": size, "seed": seed})
    return root


def write_smoke_wplus_bank(folder: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Random stage-2 augmentation files in the official formats.

    Returns:
        ``(att_direction_scale.pth, ffhq_pca.pt, ganspace_configs.csv)``: a list of 17 [1,18,512] unit
        directions, a PCA dict (mean [1,512], comp [80,1,512] orthonormal, std [80]) and 3 configs.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 17)
    bank = [torch.nn.functional.normalize(torch.randn(1, 18, 512, generator=gen), dim=-1) for _ in range(17)]
    q, _ = torch.linalg.qr(torch.randn(512, 80, generator=gen))
    pca = {"mean": torch.randn(1, 512, generator=gen) * 0.1, "comp": q.T.reshape(80, 1, 512).contiguous(),
           "std": torch.rand(80, generator=gen) + 0.5}  # fmt: skip
    paths = (folder / "att_direction_scale.pth", folder / "ffhq_pca.pt", folder / "ganspace_configs.csv")
    if all(p.is_file() for p in paths):
        return paths
    _atomic(paths[0], lambda tmp: torch.save(bank, tmp))
    _atomic(paths[1], lambda tmp: torch.save(pca, tmp))
    configs = "smoke_a\t1\t0\t4\t10\nsmoke_b\t5\t4\t8\t-10\nsmoke_c\t7\t8\t12\t20\n"
    _atomic(paths[2], lambda tmp: tmp.write_text(configs, encoding="utf-8"))
    return paths


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename to ``path``: a reader never sees a half-written smoke file."""
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    tmp.replace(path)


def smoke_base(family: str, seed: int = 0):
    """:class:`~.base.BaseModels` of tiny random parts (UNet, VAE, text encoder, DDPM schedule)."""
    from .base import BaseModels

    scaling = 0.18215 if family == "sd15" else 0.13025
    unet, vae, text = tiny_unet(family, seed), tiny_vae(seed + 1, scaling), SmokeTextEncoder(family, seed + 2)
    for part in (unet, vae, text):
        part.requires_grad_(False).eval()
    return BaseModels(family, unet, vae, text, smoke_scheduler(), f"smoke-{family}-seed{seed}")


#: Resampler hyper-parameters of the smoke PSTF adapter (16 queries as the official; tiny widths).
SMOKE_RESAMPLER = {"dim": 64, "depth": 1, "dim_head": 16, "heads": 4, "num_queries": 16, "ff_mult": 2}


def smoke_controlnet(unet: nn.Module, seed: int = 0) -> nn.Module:
    """A random IdentityNet stand-in: diffusers ``ControlNetModel.from_unet`` of the tiny SDXL UNet."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed + 5)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).requires_grad_(False)


def write_smoke_pstf_files(folder: Path, sites, seed: int = 0) -> tuple[Path, Path]:
    """A random InstantID ``ip-adapter.bin`` for the smoke UNet's sites and a PreciseControl-format deltas JSON.

    Returns:
        ``(ip-adapter.bin, all_delta_w_dict.json)``.
    """
    from ..pstf.model import build_pstf_checkpoint, pstf_checkpoint_shapes
    from .pstf_data import EDIT_KEYS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = pstf_checkpoint_shapes(False, CONTEXT_DIMS["sdxl"], sites, SMOKE_RESAMPLER)
    instantid, path = folder / "ip-adapter.bin", folder / "all_delta_w_dict.json"
    if instantid.is_file() and path.is_file():
        return instantid, path
    _atomic(instantid, lambda tmp: torch.save(build_pstf_checkpoint(seed, style=False, shapes=shapes), tmp))
    rng = np.random.default_rng(seed + 7)
    deltas = {k: (rng.standard_normal((18, 512)) * 0.5).round(4).tolist() for k in EDIT_KEYS}
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(deltas), encoding="utf-8"))
    return instantid, path
