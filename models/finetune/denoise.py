"""The epsilon-prediction training step, written against a plain denoiser callable.

Convention (ComfyUI's k-diffusion view of an EPS model such as SD1.5): a clean latent ``x0``
(already scaled by the VAE's latent factor) is noised as ``x_t = x0 + sigma * eps``; the
denoiser returns the denoised estimate ``x0_hat = denoiser(x_t, sigma, **cond)``; the model's
noise prediction is ``eps_hat = (x_t - x0_hat) / sigma``. This is DDPM's
``sqrt(a) x0 + sqrt(1 - a) eps`` divided by ``sqrt(a)``, with ``sigma = sqrt((1 - a) / a)``, so
the loss ``||eps - eps_hat||^2`` is the usual epsilon loss of Stable Diffusion training (not
ComfyUI TrainLoraNode's ``||x0 - x0_hat||^2``, which weights it by ``sigma^2``).

The schedule is the discrete VP schedule of SD1.x: ``betas = linspace(sqrt(b0), sqrt(b1), T)^2``
(ComfyUI/LDM "linear", diffusers "scaled_linear") with b0 = 0.00085, b1 = 0.012, T = 1000,
computed in float64 and rounded to float32 exactly as ComfyUI's ``ModelSamplingDiscrete`` does, so
``timestep_to_sigma(t)`` equals ``model_sampling.sigmas[t]`` bit for bit and ComfyUI maps each
sampled sigma back to the same integer timestep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = [
    "VPSchedule",
    "SD15_SCHEDULE",
    "sample_timesteps",
    "sample_sigmas",
    "timestep_to_sigma",
    "sigma_to_timestep",
    "masked_mse",
    "add_noise",
    "eps_from_denoised",
    "eps_loss",
]

Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class VPSchedule:
    """A discrete variance-preserving noise schedule.

    Attributes:
        beta_start, beta_end: first and last beta of the scaled-linear schedule.
        steps: number of discrete timesteps T.
    """

    beta_start: float = 0.00085
    beta_end: float = 0.012
    steps: int = 1000

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """``[T]`` float64 cumulative products of ``1 - beta``."""
        betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, self.steps, dtype=torch.float64) ** 2
        return torch.cumprod(1.0 - betas, dim=0)

    @cached_property
    def sigmas(self) -> torch.Tensor:
        """``[T]`` float32 ``sqrt((1 - a) / a)``, increasing with the timestep."""
        a = self.alphas_cumprod
        return (((1 - a) / a) ** 0.5).float()

    @cached_property
    def log_sigmas(self) -> torch.Tensor:
        """``[T]`` float32 ``log(sigmas)`` (what ComfyUI matches sigmas against)."""
        return self.sigmas.log()


#: SD1.x schedule (also SD2 and SDXL): scaled-linear betas 0.00085 .. 0.012, 1000 steps.
SD15_SCHEDULE = VPSchedule()


def timestep_to_sigma(t: torch.Tensor | int, schedule: VPSchedule = SD15_SCHEDULE) -> torch.Tensor:
    """Sigma of integer timestep(s) ``t`` in ``[0, T)``; same shape as ``t``, float32."""
    t = torch.as_tensor(t, dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.steps):
        raise ValueError(f"timesteps must lie in [0, {schedule.steps}); got {t.tolist()}")
    return schedule.sigmas[t]


def sigma_to_timestep(sigma: torch.Tensor, schedule: VPSchedule = SD15_SCHEDULE) -> torch.Tensor:
    """Nearest timestep in log-sigma (ComfyUI's ``ModelSamplingDiscrete.timestep``); long, same shape."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    dists = sigma.log().reshape(1, -1) - schedule.log_sigmas.to(sigma.device)[:, None]
    return dists.abs().argmin(dim=0).view(sigma.shape)


def sample_timesteps(
    batch: int, gen: torch.Generator, schedule: VPSchedule = SD15_SCHEDULE, t_range: tuple[int, int] | None = None
) -> torch.Tensor:
    """``[batch]`` long timesteps drawn uniformly from ``t_range`` (inclusive; default ``[0, T-1]``)."""
    lo, hi = t_range if t_range is not None else (0, schedule.steps - 1)
    if not 0 <= lo <= hi < schedule.steps:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi < {schedule.steps}; got {(lo, hi)}")
    return torch.randint(lo, hi + 1, (batch,), generator=gen)


def sample_sigmas(
    batch: int, gen: torch.Generator, schedule: VPSchedule = SD15_SCHEDULE, t_range: tuple[int, int] | None = None
) -> torch.Tensor:
    """``[batch]`` float32 sigmas of uniformly drawn timesteps (DDPM training distribution), on the CPU."""
    return timestep_to_sigma(sample_timesteps(batch, gen, schedule, t_range), schedule)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error, over the whole tensor or only inside a mask.

    Args:
        pred, target: ``[B,C,H,W]`` (any equal shapes).
        mask: ``None`` for the plain mean, or weights in [0, 1] broadcastable to ``pred``
            (typically ``[B,1,H,W]``). The result is ``sum(m * (pred - target)^2) / sum(m)`` with
            ``m`` broadcast to the full shape, i.e. the mean over the masked elements of every
            channel. An all-zero mask gives 0 (and zero gradients), never NaN.

    Returns:
        Scalar float32 tensor.
    """
    diff = (pred.float() - target.float()) ** 2
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype).expand_as(diff)
    return (diff * m).sum() / m.sum().clamp_min(1e-8)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_t = x0 + sigma * noise`` with ``sigma`` ``[B]`` broadcast over the other dims."""
    return x0 + sigma.to(x0).view(-1, *([1] * (x0.dim() - 1))) * noise


def eps_from_denoised(x_t: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``eps_hat = (x_t - denoised) / sigma`` (float32)."""
    s = sigma.to(device=x_t.device, dtype=torch.float32).view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t.float() - denoised.float()) / s


def eps_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    gen: torch.Generator,
    *,
    mask: torch.Tensor | None = None,
    schedule: VPSchedule = SD15_SCHEDULE,
    sigmas: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    **cond: object,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One epsilon-prediction loss evaluation.

    Noise and sigmas are drawn on the CPU from ``gen`` (so a seed gives the same draw on every
    device) and moved to ``x0``'s device.

    Args:
        denoiser: ``denoiser(x_t, sigma, **cond) -> x0_hat`` with ``x_t`` ``[B,C,H,W]``, ``sigma`` ``[B]``.
        x0: clean latents ``[B,C,H,W]``.
        gen: CPU generator.
        mask: loss mask for :func:`masked_mse` (``None`` = whole latent).
        sigmas, noise: use these instead of drawing them (tests, shared draws).
        cond: passed to the denoiser unchanged (e.g. ``c_concat``, ``c_crossattn``).

    Returns:
        ``(loss, {"x_t", "sigma", "noise", "eps_pred"})``.
    """
    b = x0.shape[0]
    if sigmas is None:
        sigmas = sample_sigmas(b, gen, schedule)
    if noise is None:
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32)
    sigmas = sigmas.to(x0.device, torch.float32)
    noise = noise.to(device=x0.device, dtype=x0.dtype)
    x_t = add_noise(x0, noise, sigmas)
    denoised = denoiser(x_t, sigmas, **cond)
    eps_pred = eps_from_denoised(x_t, denoised, sigmas)
    loss = masked_mse(eps_pred, noise, mask)
    return loss, {"x_t": x_t, "sigma": sigmas, "noise": noise, "eps_pred": eps_pred}
