"""Which of SeFi-IDE's five denoising stages a timestep or a sigma belongs to.

The 1000 training timesteps of a discrete diffusion schedule are cut into five
equal stages: ``stage = floor(t * 5 / 1000)`` for ``t`` in ``[0, 999]``.

**Convention (used everywhere in Likeness):** stage index 0 is the *clean* end
(``t`` in 0..199, the last fifth of sampling, fine identity detail) and stage 4
is the *noisy* end (``t`` in 800..999, the first fifth of sampling, layout and
pose). Row ``i`` of every ID-token tensor belongs to stage ``i``.

A sampler works in sigmas; a sigma is mapped to the timestep whose sigma is
nearest in log space, exactly as ComfyUI's ``ModelSamplingDiscrete.timestep``
does, and then to its stage.
"""

from __future__ import annotations

import torch

__all__ = ["NUM_STAGES", "NUM_TIMESTEPS", "stage_of_timestep", "stage_of_sigma", "stage_timesteps"]

NUM_STAGES = 5
NUM_TIMESTEPS = 1000


def stage_of_timestep(t: int | float | torch.Tensor) -> int | torch.Tensor:
    """``floor(t * 5 / 1000)`` clamped to ``[0, 4]``; 4 = the noisy end.

    Args:
        t: a training timestep in ``[0, 999]`` (int, float, or a tensor of them).

    Returns:
        An int for a scalar input, else a ``torch.long`` tensor of the same shape.
    """
    if isinstance(t, torch.Tensor):
        stage = torch.floor(t.double() * NUM_STAGES / NUM_TIMESTEPS).long()
        return stage.clamp(0, NUM_STAGES - 1)
    stage = int((float(t) * NUM_STAGES) // NUM_TIMESTEPS)
    return min(max(stage, 0), NUM_STAGES - 1)


def stage_of_sigma(sigma: float | torch.Tensor, schedule_sigmas: torch.Tensor) -> int | torch.Tensor:
    """The stage of a sampling sigma: nearest timestep in log-sigma, then :func:`stage_of_timestep`.

    Args:
        sigma: the sigma of a UNet call (k-diffusion scale, ``x_t = x_0 + sigma * eps``),
            a float or a tensor of sigmas.
        schedule_sigmas: ``[1000]`` the discrete schedule's sigma of each timestep,
            ascending with ``t`` (SD1.5: 0.0292 ... 14.6146).

    Returns:
        An int for a float sigma, else a ``torch.long`` tensor shaped like ``sigma``.
    """
    if schedule_sigmas.ndim != 1 or schedule_sigmas.numel() != NUM_TIMESTEPS:
        raise ValueError(f"schedule_sigmas must be [{NUM_TIMESTEPS}], got shape {tuple(schedule_sigmas.shape)}")
    log_table = schedule_sigmas.detach().float().cpu().log()  # float32 throughout, as ComfyUI compares them
    s = torch.as_tensor(sigma, dtype=torch.float32).detach().cpu()
    t = (s.log().reshape(-1, 1) - log_table.reshape(1, -1)).abs().argmin(dim=1).reshape(s.shape)
    stage = stage_of_timestep(t)
    return int(stage) if not isinstance(sigma, torch.Tensor) else stage


def stage_timesteps(stage: int) -> range:
    """The training timesteps of a stage (``range(200 * stage, 200 * stage + 200)``)."""
    if not 0 <= stage < NUM_STAGES:
        raise ValueError(f"stage must be in [0, {NUM_STAGES - 1}], got {stage}")
    width = NUM_TIMESTEPS // NUM_STAGES
    return range(stage * width, (stage + 1) * width)
