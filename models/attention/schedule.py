"""When and where an adapter branch acts: the step window, cond/uncond chunks, and masks on a token grid.

Pure tensor maths shared by every attention patch (W+ adapter, PSTF) and every
host. A sampler calls the UNet once or more per step with the current sigma;
an adapter acts only inside ``[start_at, end_at)`` of the steps. The batch of
one UNet call is made of chunks, each all-cond or all-uncond, in the order the
host reports (ComfyUI's ``cond_or_uncond``: 0 = cond, 1 = uncond).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["StepWindow", "step_index", "tokens_for_chunks", "rows_per_chunk", "mask_to_token_grid"]


def step_index(sigma: float, sample_sigmas: torch.Tensor) -> int:
    """Index of the sampling step a sigma belongs to.

    Args:
        sigma: the sigma of the current UNet call.
        sample_sigmas: the whole schedule ``[steps + 1]`` (descending, ending at 0).

    Returns:
        ``i`` such that ``sample_sigmas[i] >= sigma > sample_sigmas[i + 1]``; sub-step
        sigmas of second-order samplers map to the step they belong to.
    """
    schedule = sample_sigmas.detach().float().cpu()
    return max(0, int((schedule >= sigma * (1.0 - 1e-4)).sum().item()) - 1)


@dataclass(frozen=True)
class StepWindow:
    """The fraction of the sampling steps in which a branch acts.

    ``start_at`` follows the W+ adapter's official delay: the branch is off for
    steps ``i <= int(start_at * steps)`` when ``start_at > 0`` (0.2 with 30 steps
    leaves steps 0..6 text-only). It is off again from step ``end_at * steps`` on.
    Without a schedule (a sampler that reports none), the sigma range
    ``[sigma_end, sigma_start]`` is used instead.

    Attributes:
        start_at: fraction in [0, 1].
        end_at: fraction in [0, 1], greater than ``start_at``.
        sigma_start: sigma at ``start_at`` (``inf`` = from the first step).
        sigma_end: sigma at ``end_at`` (0 = to the last step).
    """

    start_at: float = 0.0
    end_at: float = 1.0
    sigma_start: float = math.inf
    sigma_end: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.start_at <= 1.0 and 0.0 <= self.end_at <= 1.0):
            raise InputError(f"start_at and end_at must be in [0, 1], got {self.start_at} and {self.end_at}.")
        if self.start_at >= self.end_at:
            raise InputError(
                f"start_at ({self.start_at}) must be below end_at ({self.end_at}): the branch would act on no step."
            )

    def active_at_step(self, index: int, steps: int) -> bool:
        """Whether the branch acts at step ``index`` of ``steps``."""
        if self.start_at > 0 and index <= int(self.start_at * steps):
            return False
        return index < self.end_at * steps

    def active(self, sigma: float, sample_sigmas: torch.Tensor | None) -> bool:
        """Whether the branch acts for a UNet call at ``sigma`` (schedule ``[steps + 1]`` or None)."""
        if sample_sigmas is None or len(sample_sigmas) < 2:
            return self.sigma_end <= sigma <= self.sigma_start
        return self.active_at_step(step_index(sigma, sample_sigmas), len(sample_sigmas) - 1)


def rows_per_chunk(batch: int, cond_or_uncond: Sequence[int]) -> int:
    """Rows in each cond/uncond chunk of a batch of ``batch`` rows."""
    n = len(cond_or_uncond)
    if n == 0 or batch % n != 0:
        raise ValueError(f"batch {batch} is not a multiple of the {n} cond/uncond chunks {list(cond_or_uncond)}")
    return batch // n


def tokens_for_chunks(
    cond: torch.Tensor, uncond: torch.Tensor, cond_or_uncond: Sequence[int], batch: int
) -> torch.Tensor:
    """Per-row tokens for a batch made of cond/uncond chunks.

    Args:
        cond: ``[1 or b, T, C]`` cond tokens (b = rows per chunk: one identity per latent).
        uncond: ``[1 or b, T, C]`` uncond tokens.
        cond_or_uncond: chunk order, 0 = cond, 1 = uncond (e.g. ``[1, 0]``).
        batch: total rows B; must be a multiple of ``len(cond_or_uncond)``.

    Returns:
        ``[B, T, C]``: chunk ``j`` holds ``cond`` or ``uncond`` tiled to ``B // n`` rows.
    """
    rows = rows_per_chunk(batch, cond_or_uncond)
    chunks = []
    for flag in cond_or_uncond:
        t = cond if int(flag) == 0 else uncond
        if rows % t.shape[0] != 0:
            raise InputError(
                f"{t.shape[0]} token sets cannot be tiled to a chunk of {rows} rows: give one code, or one per latent"
            )
        chunks.append(t.repeat(rows // t.shape[0], 1, 1))
    return torch.cat(chunks, dim=0)


def mask_to_token_grid(
    mask: torch.Tensor, grid_hw: tuple[int, int], cond_or_uncond: Sequence[int], batch: int
) -> torch.Tensor:
    """An image-space mask resized to one block's token grid, one row per batch row.

    Args:
        mask: ``[Bm, H, W]`` float in [0, 1]; ``Bm`` is 1 or the rows per chunk.
        grid_hw: the block's activation ``(height, width)``; its tokens are ``height * width``.
        cond_or_uncond: chunk order of the batch.
        batch: total rows of the attention batch.

    Returns:
        ``[batch or 1, height * width, 1]`` float32 on ``mask``'s device (bilinear resize).

    Raises:
        ValueError: the mask's frame count fits neither 1 nor the rows per chunk.
    """
    height, width = grid_hw
    grid = F.interpolate(mask[:, None].float(), size=(height, width), mode="bilinear").flatten(1)[..., None]
    rows = rows_per_chunk(batch, cond_or_uncond)
    if grid.shape[0] == rows:
        return grid.repeat(len(cond_or_uncond), 1, 1)
    if grid.shape[0] != 1:
        raise InputError(f"the attention mask has {grid.shape[0]} frames but the latent batch is {rows}")
    return grid
