"""A small DDIM sampler with classifier-free guidance for validation images during training.

Works with any ``eps(x, t, step) -> (eps_cond, eps_uncond)`` callable, so the W+ and PSTF trainers
sample through the very modules they train (no pipeline object, smoke models included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["ddim_sample", "decode_latents", "save_strip"]

EpsFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def ddim_sample(
    eps: EpsFn,
    shape: tuple[int, ...],
    scheduler_config: Mapping[str, Any],
    *,
    steps: int,
    guidance: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sample latents with DDIM (eta 0) and CFG ``uncond + g * (cond - uncond)``.

    Args:
        eps: noise predictions ``(cond, uncond)`` for latents ``x`` at timestep ``t`` (step index given).
        shape: latent shape ``[B, 4, h, w]``.
        scheduler_config: the training DDPM schedule's config (betas, timesteps).
        steps: sampling steps.
        guidance: CFG scale.
        seed: initial-noise seed (CPU generator, so every device draws the same noise).
        device: compute device.
        dtype: latent dtype.

    Returns:
        Final latents ``shape`` (float32).
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(dict(scheduler_config))
    sched.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        cond, uncond = eps(x, t, i)
        guided = uncond.float() + guidance * (cond.float() - uncond.float())
        x = sched.step(guided, t, x.float()).prev_sample.to(dtype)
    return x.float()


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> list[np.ndarray]:
    """VAE-decode ``[B,4,h,w]`` latents (divided by the VAE's scaling factor) to uint8 ``[H,W,3]`` images."""
    param = next(vae.parameters())
    images = vae.decode(latents.to(param.device, param.dtype) / vae.config.scaling_factor).sample
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in arr]


def save_strip(images: Sequence[np.ndarray], path: Path) -> Path:
    """Images (resized to the height of the first) side by side, saved as PNG."""
    height = images[0].shape[0]
    tiles = [Image.fromarray(a).resize((round(a.shape[1] * height / a.shape[0]), height)) for a in images]
    strip = Image.new("RGB", (sum(t.width for t in tiles), height))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path
