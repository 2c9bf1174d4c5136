"""Step window, cond/uncond chunk tokens and mask-to-token-grid maths (models/attention/schedule.py)."""

from __future__ import annotations

import math

import pytest
import torch

from likeness.models.attention.schedule import (
    StepWindow,
    mask_to_token_grid,
    rows_per_chunk,
    step_index,
    tokens_for_chunks,
)


def _schedule(steps: int) -> torch.Tensor:
    """A descending Karras-like schedule of ``steps + 1`` sigmas ending at 0."""
    sig = torch.linspace(14.6, 0.03, steps) ** 1.0
    return torch.cat([sig, torch.zeros(1)])


def test_official_delay_02_of_30_steps_leaves_steps_0_to_6_text_only():
    window = StepWindow(0.2, 1.0)
    sigmas = _schedule(30)
    active = [window.active(float(sigmas[i]), sigmas) for i in range(30)]
    assert active == [False] * 7 + [True] * 23
    assert [window.active_at_step(i, 30) for i in range(30)] == active


def test_start_zero_acts_from_the_first_step_and_end_cuts_off():
    assert all(StepWindow(0.0, 1.0).active_at_step(i, 20) for i in range(20))
    window = StepWindow(0.0, 0.5)
    assert [window.active_at_step(i, 20) for i in range(20)] == [True] * 10 + [False] * 10


def test_sub_step_sigmas_belong_to_their_step():
    sigmas = _schedule(10)
    between = float((sigmas[3] + sigmas[4]) / 2)  # a second-order sampler's intermediate evaluation
    assert step_index(between, sigmas) == 3
    assert step_index(float(sigmas[0]), sigmas) == 0 and step_index(float(sigmas[9]), sigmas) == 9
    assert step_index(100.0, sigmas) == 0


@pytest.mark.parametrize(("start", "end"), [(0.5, 0.5), (0.8, 0.2), (-0.1, 1.0), (0.0, 1.5)])
def test_bad_windows_are_refused(start, end):
    with pytest.raises(ValueError, match="start_at|end_at"):
        StepWindow(start, end)


def test_without_a_schedule_the_sigma_range_decides():
    window = StepWindow(0.2, 0.8, sigma_start=10.0, sigma_end=1.0)
    assert window.active(5.0, None) and window.active(10.0, None) and window.active(1.0, None)
    assert not window.active(12.0, None) and not window.active(0.5, None)
    assert window.active(5.0, torch.tensor([5.0]))  # a one-entry "schedule" is no schedule
    assert StepWindow().sigma_start == math.inf and StepWindow().active(1e6, None)


def test_tokens_for_chunks_follow_cond_or_uncond_order():
    cond = torch.full((1, 4, 3), 1.0)
    uncond = torch.full((1, 4, 3), -1.0)
    out = tokens_for_chunks(cond, uncond, [1, 0], batch=4)
    assert out.shape == (4, 4, 3)
    assert out[:2].eq(-1).all() and out[2:].eq(1).all()
    per_latent = torch.arange(2.0).view(2, 1, 1).expand(2, 4, 3)
    mixed = tokens_for_chunks(per_latent, uncond, [0, 1], batch=4)
    assert mixed[:, 0, 0].tolist() == [0.0, 1.0, -1.0, -1.0]  # one identity per latent in the cond chunk
    assert tokens_for_chunks(cond, uncond, [0], batch=3).eq(1).all()


def test_tokens_for_chunks_refuse_untileable_batches():
    two = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="2 token sets cannot be tiled to a chunk of 3 rows"):
        tokens_for_chunks(two, two[:1], [0, 1], batch=6)
    with pytest.raises(ValueError, match="batch 5 is not a multiple of the 2 cond/uncond chunks"):
        rows_per_chunk(5, [0, 1])
    with pytest.raises(ValueError, match="0 cond/uncond chunks"):
        rows_per_chunk(4, [])


def test_mask_to_token_grid_shapes_and_values():
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # left half
    grid = mask_to_token_grid(mask, (8, 8), [1, 0], batch=4)
    assert grid.shape == (1, 64, 1) and grid.dtype == torch.float32  # one frame broadcasts over the batch
    rows = grid[0, :, 0].view(8, 8)
    assert rows[:, :4].eq(1).all() and rows[:, 4:].eq(0).all()
    frames = torch.stack([torch.zeros(16, 16), torch.ones(16, 16)])
    per_row = mask_to_token_grid(frames, (4, 4), [0, 1], batch=4)
    assert per_row.shape == (4, 16, 1)
    assert per_row[:, :, 0].mean(1).tolist() == [0.0, 1.0, 0.0, 1.0]  # frames repeat in each chunk
    soft = mask_to_token_grid(torch.full((1, 10, 10), 0.25), (5, 5), [0], batch=1)
    torch.testing.assert_close(soft, torch.full((1, 25, 1), 0.25))


def test_mask_to_token_grid_refuses_a_wrong_frame_count():
    with pytest.raises(ValueError, match="the attention mask has 3 frames but the latent batch is 2"):
        mask_to_token_grid(torch.zeros(3, 8, 8), (4, 4), [1, 0], batch=4)
