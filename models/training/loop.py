"""The training loop shared by the W+ adapter and PSTF trainers, on HuggingFace accelerate.

One code path for one CPU, one GPU and ``accelerate launch`` on several GPUs: the model is wrapped by
``accelerator.prepare`` (DDP when distributed), gradients are accumulated with
``accelerator.accumulate``, the forward runs under ``accelerator.autocast`` (fp16 / bf16 mixed
precision with fp32 trainable weights), and the data is sharded by :mod:`.order` (not by accelerate),
so the sample order is fixed by the seed and a resumed run continues it exactly.

A task (:class:`TrainingTask`) supplies the model, the samples and the loss; this module does the
rest: AdamW, a constant learning rate after an optional linear warm-up, gradient clipping, the log,
checkpoints in the official layout every ``save_every`` steps and at the end, validation images,
and resume from the newest checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import LikenessError
from .order import PositionDataset, PositionSampler, SampleOrder, step_generator
from .state import (
    TrainLog,
    check_fingerprint,
    latest_checkpoint,
    load_training_state,
    save_checkpoint,
)

__all__ = ["TrainConfig", "TrainingTask", "SampleSource", "TrainResult", "run_training", "make_accelerator"]

logger = logging.getLogger(__name__)

PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Settings common to every trainer.

    Attributes:
        out: run folder (checkpoints, log, validation images).
        steps: optimizer steps to reach (a resumed run continues up to this number).
        batch_size: samples per process per micro-step.
        grad_accum: micro-steps per optimizer step.
        lr: learning rate (every group, unless the task sets its own).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up of the learning rate (0 = constant from the start, as the papers).
        grad_clip: max gradient norm, or None.
        mixed_precision: ``"no"``, ``"fp16"`` (CUDA) or ``"bf16"``.
        save_every: checkpoint interval in steps (a checkpoint is also written at the last step).
        keep_checkpoints: keep only the newest this many (None = all).
        validate_every: validation-image interval in steps (None = never).
        seed: run seed (data order, dropout, noise).
        resume: ``"auto"`` (newest checkpoint in ``out``, if any), ``"none"`` or a checkpoint folder.
        num_workers: DataLoader worker processes.
        cpu: force the CPU even when a GPU is present.
    """

    out: Path
    steps: int
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float | None = None
    mixed_precision: str = "no"
    save_every: int = 1000
    keep_checkpoints: int | None = None
    validate_every: int | None = None
    seed: int = 0
    resume: str = "auto"
    num_workers: int = 0
    cpu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`LikenessError` for impossible settings (quoting them)."""
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.save_every < 1:
            raise LikenessError(
                f"--steps, --batch-size, --grad-accum and --save-every must be >= 1; got {self.steps}, "
                f"{self.batch_size}, {self.grad_accum}, {self.save_every}."
            )
        if self.mixed_precision not in PRECISIONS:
            raise LikenessError(f"--mixed-precision {self.mixed_precision!r}: choose one of {list(PRECISIONS)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LikenessError(f"--lr must be a positive number; got {self.lr}.")


class SampleSource(Protocol):
    """Makes the samples of a run: small and picklable (DataLoader workers get a copy), no model inside."""

    def __call__(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One training sample (CPU tensors) of dataset item ``index``."""

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch from samples."""


class TrainingTask(Protocol):
    """What a trainer provides to :func:`run_training`."""

    official_name: str  #: file name of the weights in their official layout
    num_items: int  #: dataset items (the sample order permutes them)

    def setup(self, accelerator: Any) -> nn.Module:
        """Build/load everything on ``accelerator.device``; return the module to train (holds every
        trainable parameter; its forward is what ``step`` calls)."""

    def param_groups(self, module: nn.Module, lr: float) -> list[dict[str, Any]]:
        """AdamW parameter groups, each with a ``"name"``."""

    def samples(self) -> SampleSource:
        """The picklable sample maker the DataLoader (and its worker processes) use."""

    def step(self, module: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The losses of one micro-step: ``"loss"`` (scalar with grad) plus named parts."""

    def official_state(self, module: nn.Module) -> dict[str, Any]:
        """The trained weights in the official nested layout (CPU tensors)."""

    def load_official(self, module: nn.Module, state: Mapping[str, Any]) -> None:
        """Load weights written by :meth:`official_state` (strict)."""

    def fingerprint(self) -> dict[str, Any]:
        """Settings a resumed run must share (method, stage, base model, data, resolution, ...)."""

    def validate(self, module: nn.Module, step: int, folder: Path) -> Path | None:
        """Write a validation image for ``step`` into ``folder``; None when there is no validation face."""


@dataclass(frozen=True)
class TrainResult:
    """What a run did: ``start_step`` (0 or the resumed step), ``step`` reached, the final weights file."""

    start_step: int
    step: int
    weights: Path | None
    losses: list[float]


def make_accelerator(cfg: TrainConfig) -> Any:
    """An ``accelerate.Accelerator`` for ``cfg`` (reads the ``accelerate launch`` environment)."""
    try:
        from accelerate import Accelerator
    except ImportError:
        raise LikenessError("Training needs the accelerate package: pip install accelerate") from None
    if cfg.mixed_precision == "fp16" and (cfg.cpu or not torch.cuda.is_available()):
        raise LikenessError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no on the CPU.")
    from accelerate.state import AcceleratorState

    # AcceleratorState is a per-process singleton; a second run in one process (tests, notebooks) may use another
    # precision. Only the accelerator-level part is reset; the process group (PartialState) is kept.
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu)


def _run_fingerprint(task: TrainingTask, cfg: TrainConfig, world: int) -> dict[str, Any]:
    fp = dict(task.fingerprint())
    fp.update(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, world_size=world, seed=cfg.seed)
    return fp


def _resume_folder(cfg: TrainConfig, official_name: str) -> Path | None:
    if cfg.resume == "none":
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(cfg.out, official_name)
    folder = Path(cfg.resume)
    if not (folder / official_name).is_file():
        raise LikenessError(f"--resume {cfg.resume!r}: no {official_name} in that folder (not a checkpoint).")
    return folder


def _lr_lambda(warmup: int) -> Callable[[int], float]:
    return lambda step: 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def run_training(
    task: TrainingTask,
    cfg: TrainConfig,
    accelerator: Any | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``task`` to ``cfg.steps`` optimizer steps (resuming from a checkpoint when there is one).

    Args:
        task: the trainer.
        cfg: :class:`TrainConfig`.
        accelerator: an existing ``Accelerator`` (default: :func:`make_accelerator`).
        on_step: called on the main process with each log record.

    Returns:
        :class:`TrainResult`.

    Raises:
        LikenessError: bad settings, or a checkpoint that does not match this run.
    """
    cfg.check()
    acc = accelerator or make_accelerator(cfg)
    cfg.out = Path(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    module = task.setup(acc)
    groups = task.param_groups(module, cfg.lr)
    names = [g.pop("name") for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps))
    fingerprint = _run_fingerprint(task, cfg, acc.num_processes)
    start = _restore(task, module, optimizer, scheduler, cfg, fingerprint)
    module, optimizer = acc.prepare(module, optimizer)
    log = TrainLog(cfg.out, start) if acc.is_main_process else None
    losses: list[float] = []
    if start >= cfg.steps:
        logger.info("training: already at step %d >= --steps %d; nothing to do", start, cfg.steps)
        return TrainResult(start, start, _final_weights(task, cfg, acc, module, start), losses)
    loader = _loader(task, cfg, acc, start)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    step, micro, acc_parts, t0 = start, start * cfg.grad_accum, {}, time.perf_counter()
    for batch in loader:  # module modes stay as the task set them (frozen parts eval; no dropout in new layers)
        with acc.accumulate(module):
            gen = step_generator(cfg.seed, micro, acc.process_index, acc.device)
            with acc.autocast():
                parts = task.step(module, _to_device(batch, acc.device), gen)
            acc.backward(parts["loss"])
            if acc.sync_gradients and cfg.grad_clip:
                acc.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        for k, v in parts.items():
            acc_parts[k] = acc_parts.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
        if not acc.sync_gradients:
            continue
        scheduler.step()
        step += 1
        record = _record(acc, step, acc_parts, names, scheduler, cfg, t0)
        losses.append(record["loss"])
        acc_parts = {}
        if log is not None:
            log.write(record)
            if on_step is not None:
                on_step(record)
        _periodic(task, cfg, acc, module, optimizer, scheduler, fingerprint, step)
        if step >= cfg.steps:
            break
    return TrainResult(start, step, _final_weights(task, cfg, acc, module, step), losses)


def _restore(task, module, optimizer, scheduler, cfg: TrainConfig, fingerprint: dict[str, Any]) -> int:
    folder = _resume_folder(cfg, task.official_name)
    if folder is None:
        return 0
    state = load_training_state(folder)
    check_fingerprint(state["fingerprint"], fingerprint, folder)
    from ..files.checkpoints import load_file

    task.load_official(module, load_file(folder / task.official_name))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    logger.info("training: resumed from %s at step %d", folder, state["step"])
    return int(state["step"])


def _loader(task: TrainingTask, cfg: TrainConfig, acc: Any, start: int) -> DataLoader:
    order = SampleOrder(task.num_items, cfg.seed)
    sampler = PositionSampler(
        start * cfg.grad_accum, cfg.steps * cfg.grad_accum, cfg.batch_size, acc.num_processes, acc.process_index
    )
    source = task.samples()
    return DataLoader(
        PositionDataset(source, order, cfg.seed),
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=source.collate,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _record(acc, step: int, parts: dict[str, float], names, scheduler, cfg: TrainConfig, t0: float) -> dict:
    keys = sorted(parts)
    values = torch.tensor([parts[k] for k in keys], device=acc.device, dtype=torch.float64)
    values = acc.reduce(values, reduction="mean") if acc.num_processes > 1 else values
    mean = dict(zip(keys, values.tolist(), strict=True))
    return {
        "step": step,
        "loss": mean.pop("loss"),
        "parts": mean,
        "lr": dict(zip(names, scheduler.get_last_lr(), strict=True)),
        "samples": step * cfg.batch_size * cfg.grad_accum * acc.num_processes,
        "time_s": round(time.perf_counter() - t0, 3),
    }


def _periodic(task, cfg: TrainConfig, acc, module, optimizer, scheduler, fingerprint, step: int) -> None:
    if step % cfg.save_every == 0 or step >= cfg.steps:
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_checkpoint(
                cfg.out,
                step,
                task.official_name,
                task.official_state(acc.unwrap_model(module)),
                optimizer.state_dict(),
                scheduler.state_dict(),
                fingerprint,
                keep=cfg.keep_checkpoints,
            )
    if cfg.validate_every and (step % cfg.validate_every == 0 or step >= cfg.steps):
        if acc.is_main_process:
            with torch.no_grad():
                path = task.validate(acc.unwrap_model(module), step, cfg.out / "validation")
            if path is not None:
                logger.info("training: validation image %s", path)
        acc.wait_for_everyone()


def _final_weights(task, cfg: TrainConfig, acc, module, step: int) -> Path | None:
    """Copy the trained weights to ``out/<official name>`` (main process)."""
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return None
    path = cfg.out / task.official_name
    tmp = path.with_name(path.name + ".partial")
    torch.save(task.official_state(acc.unwrap_model(module)), tmp)
    tmp.replace(path)
    logger.info("training: step %d, weights in %s", step, path)
    return path


def config_summary(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as JSON-friendly values (written to ``<out>/config.json`` by the CLI)."""
    out = asdict(cfg)
    out["out"] = str(cfg.out)
    return out
