"""models.finetune.loop: the shared optimisation loop (determinism, interruption, reports, clipping)."""

from __future__ import annotations

import math

import pytest
import torch

from likeness.models.errors import LikenessError
from likeness.models.finetune import (
    StepReport,
    TrainingDiverged,
    TrainingInterrupted,
    losses_of,
    step_generator,
    train_loop,
)


def _problem(seed: int = 0):
    """Least squares: w -> target, with a noisy batch drawn from the step generator."""
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.zeros(8))
    b = torch.nn.Parameter(torch.zeros(()))
    target = torch.linspace(-1, 1, 8)
    opt = torch.optim.AdamW([{"params": [w], "lr": 0.05, "name": "w"}, {"params": [b], "lr": 0.01}])

    def step_fn(step, gen):
        noise = torch.randn(8, generator=gen) * 0.01
        err = ((w + b - target - noise) ** 2).mean()
        return {"loss": err, "bias": b.detach().abs()}

    return w, b, opt, step_fn


def test_loop_reduces_the_loss_and_reports_every_step():
    w, _, opt, step_fn = _problem()
    seen = []
    reports = train_loop(step_fn, opt, 60, seed=3, on_step=seen.append)
    assert [r.step for r in reports] == list(range(1, 61)) and seen == reports
    assert all(isinstance(r, StepReport) for r in reports)
    assert reports[-1].loss < 0.05 * reports[0].loss
    assert set(reports[0].parts) == {"bias"} and reports[0].lr == {"w": 0.05, "1": 0.01}
    assert losses_of(reports) == [r.loss for r in reports]


def test_same_seed_same_run_and_continuation_draws_like_one_long_run():
    runs = []
    for _ in range(2):
        w, _, opt, step_fn = _problem()
        runs.append((train_loop(step_fn, opt, 10, seed=7), w.detach().clone()))
    assert [r.loss for r in runs[0][0]] == [r.loss for r in runs[1][0]]
    assert torch.equal(runs[0][1], runs[1][1])
    # the generator of step i depends only on (seed, i)
    a = torch.rand(4, generator=step_generator(7, 5))
    assert torch.equal(a, torch.rand(4, generator=step_generator(7, 5)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(7, 6)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(8, 5)))
    draws = []
    q = torch.nn.Parameter(torch.zeros(1))

    def record(step, gen):
        draws.append((step, torch.rand(1, generator=gen).item()))
        return {"loss": (q**2).sum()}

    train_loop(record, torch.optim.SGD([q], lr=0.1), 3, seed=1, start_step=4)
    assert [s for s, _ in draws] == [4, 5, 6]
    assert draws[0][1] == torch.rand(1, generator=step_generator(1, 4)).item()


def test_start_step_numbers_reports_from_the_global_step():
    _, _, opt, step_fn = _problem()
    reports = train_loop(step_fn, opt, 3, seed=0, start_step=600)
    assert [r.step for r in reports] == [601, 602, 603]


def test_should_stop_raises_before_the_next_step_and_leaves_later_steps_undone():
    w, _, opt, step_fn = _problem()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingInterrupted, match="interrupted before step 3 of 10; nothing was written"):
        train_loop(step_fn, opt, 10, seed=0, should_stop=stop)
    assert isinstance(TrainingInterrupted("x"), LikenessError)


def test_non_finite_loss_raises_without_updating():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    with pytest.raises(TrainingDiverged, match="became nan at step 1"):
        train_loop(lambda s, g: {"loss": (p * math.nan).sum()}, opt, 3, seed=0)
    assert torch.equal(p.detach(), torch.ones(2))


def test_grad_clip_bounds_the_update():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    train_loop(lambda s, g: {"loss": (p * torch.tensor([100.0, 0, 0, 0])).sum()}, opt, 1, seed=0, grad_clip=1.0)
    assert p.detach().abs().max().item() == pytest.approx(1.0, rel=1e-5)


def test_bad_step_function_output_is_rejected():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    with pytest.raises(ValueError, match="scalar tensor 'loss'"):
        train_loop(lambda s, g: {"total": p.sum()}, opt, 1, seed=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        train_loop(lambda s, g: {"loss": p.sum()}, opt, -1, seed=0)
    assert train_loop(lambda s, g: {"loss": p.sum()}, opt, 0, seed=0) == []
