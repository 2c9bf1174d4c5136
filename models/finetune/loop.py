"""The optimisation loop shared by every test-time fine-tuning method (FaceA-Net, SeFi-IDE).

The loop owns nothing model-specific: a ``step_fn(step, gen)`` builds the loss of one step
(sampling data, noise and timesteps from ``gen``), and the loop does ``zero_grad`` ->
``backward`` -> optional gradient clipping -> ``optimizer.step``, reports, and stops cleanly
when asked to.

Determinism: step ``i`` draws from a CPU ``torch.Generator`` seeded with a value derived from
``(seed, i)`` only, so a run is reproducible and a run continued with ``start_step=k`` draws
exactly what steps ``k, k+1, ...`` of one long run would have drawn.

Interruption: ``should_stop()`` is polled before every step; when it returns True the loop raises
:class:`TrainingInterrupted` and the caller writes nothing (the trained parameters are left in
whatever state the last completed step produced, which callers discard).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ..errors import LikenessError

__all__ = ["StepReport", "TrainingInterrupted", "TrainingDiverged", "train_loop", "step_generator", "losses_of"]

logger = logging.getLogger(__name__)

StepFn = Callable[[int, torch.Generator], dict[str, torch.Tensor]]

# Odd 64-bit constant (golden ratio) that spreads (seed, step) pairs over the generator's seed space.
_MIX = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class StepReport:
    """What one optimisation step did.

    Attributes:
        step: 1-based number of the step just completed, counted from the very first step of the
            training (``start_step + i + 1``), so curves of continued runs line up.
        loss: the total loss of the step (a float, before the optimizer update).
        parts: named loss parts the step function returned besides ``"loss"`` (e.g. ``global``,
            ``local``), as floats.
        lr: learning rate per optimizer parameter group, keyed by the group's ``"name"`` (or its
            index as a string when unnamed).
    """

    step: int
    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    lr: dict[str, float] = field(default_factory=dict)


class TrainingInterrupted(LikenessError):
    """The user stopped the training; the caller must not write any result."""


class TrainingDiverged(LikenessError):
    """The loss became NaN or infinite; nothing is written."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator step ``step`` (0-based) of a run seeded with ``seed`` draws from."""
    mixed = ((int(seed) & _MASK64) * _MIX + (int(step) + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    return torch.Generator(device="cpu").manual_seed(mixed % (1 << 63))


def _lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def _params(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def train_loop(
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    seed: int,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    grad_clip: float | None = None,
    start_step: int = 0,
) -> list[StepReport]:
    """Run ``steps`` optimisation steps.

    Args:
        step_fn: ``step_fn(step, gen) -> {"loss": scalar tensor with grad, **parts}``; ``step`` is
            the 0-based global step index (``start_step + i``), ``gen`` a CPU generator to draw all
            randomness of the step from (see :func:`step_generator`).
        optimizer: built over the trainable parameters; its param groups may carry a ``"name"``.
        steps: number of steps to run (>= 0).
        seed: base seed of the run.
        on_step: called with each :class:`StepReport` after the optimizer update.
        should_stop: polled before each step; True raises :class:`TrainingInterrupted`.
        grad_clip: clip the global gradient norm of all optimised parameters to this value.
        start_step: global index of the first step (continue a run, e.g. an attribute transplant).

    Returns:
        One :class:`StepReport` per completed step.

    Raises:
        TrainingInterrupted: ``should_stop()`` returned True.
        TrainingDiverged: a step's loss was NaN or infinite (the update is not applied).
        ValueError: ``steps`` < 0, or ``step_fn`` returned no scalar ``"loss"``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    reports: list[StepReport] = []
    for i in range(steps):
        index = start_step + i
        if should_stop is not None and should_stop():
            logger.info("training stopped by the user before step %d of %d", index + 1, start_step + steps)
            raise TrainingInterrupted(
                f"Training was interrupted before step {index + 1} of {start_step + steps}; nothing was written."
            )
        optimizer.zero_grad(set_to_none=True)
        out = step_fn(index, step_generator(seed, index))
        loss = out.get("loss") if isinstance(out, dict) else None
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"step_fn must return a dict with a scalar tensor 'loss'; got {type(out).__name__}")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"The training loss became {value} at step {index + 1}; nothing was written. Lower the learning "
                "rates, use training dtype fp32, or check the reference photos."
            )
        loss.backward()
        if grad_clip is not None and grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(_params(optimizer), float(grad_clip))
        optimizer.step()
        parts = {k: float(v.detach()) for k, v in out.items() if k != "loss" and isinstance(v, torch.Tensor)}
        report = StepReport(step=index + 1, loss=value, parts=parts, lr=_lrs(optimizer))
        reports.append(report)
        if on_step is not None:
            on_step(report)
    return reports


def losses_of(reports: Iterable[StepReport]) -> list[float]:
    """The ``loss`` of each report, in order (what the loss curve plots)."""
    return [r.loss for r in reports]
