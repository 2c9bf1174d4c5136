"""Checkpoint folders, resume and ``train_log.jsonl`` of a training run.

``<out>/checkpoint-<step>/`` (six digits) holds

* the trained weights in the method's **official layout** (``wplus_adapter.bin`` =
  ``{"w_proj", "wplus_adapter"}``; ``pytorch_model.bin`` = ``{"image_proj", "image_style_proj",
  "ip_adapter"}``), a ``torch.save`` dict that the Likeness loaders (and the official code) read as is;
* ``training_state.pt``: ``{"format", "version", "step", "optimizer", "scheduler", "fingerprint"}``
  for an exact resume (read with ``weights_only=True``).

A checkpoint is written into ``checkpoint-<step>.partial`` and renamed when complete, so an
interrupted save never looks like a checkpoint. ``train_log.jsonl`` has one JSON line per optimizer
step: ``{"step", "loss", "parts", "lr", "samples", "time_s"}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, LikenessError
from ..files.checkpoints import flatten, load_file

__all__ = [
    "STATE_FILE",
    "LOG_FILE",
    "checkpoint_dir",
    "save_checkpoint",
    "find_checkpoints",
    "latest_checkpoint",
    "load_training_state",
    "check_fingerprint",
    "TrainLog",
    "cpu_state",
    "load_into",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
STATE_FORMAT = "likeness-train-state"
STATE_VERSION = 1
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / f"checkpoint-{step:06d}"


def save_checkpoint(
    out: Path,
    step: int,
    official_name: str,
    official: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; with ``keep``, delete the oldest beyond that many.

    Returns:
        The checkpoint folder.
    """
    final = checkpoint_dir(out, step)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(dict(official), tmp / official_name)
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "step": int(step),
        "optimizer": dict(optimizer),
        "scheduler": dict(scheduler),
        "fingerprint": dict(fingerprint),
    }
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    logger.info("training: saved %s", final)
    if keep is not None and keep > 0:
        for old in find_checkpoints(out, official_name)[:-keep]:
            shutil.rmtree(old[1])
            logger.info("training: removed old checkpoint %s (keeping %d)", old[1], keep)
    return final


def find_checkpoints(out: Path, official_name: str) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out`` as ``(step, folder)``, oldest first."""
    found = []
    if not Path(out).is_dir():
        return found
    for child in Path(out).iterdir():
        match = _CKPT.match(child.name)
        if match and (child / STATE_FILE).is_file() and (child / official_name).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(out: Path, official_name: str) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = find_checkpoints(out, official_name)
    return found[-1][1] if found else None


def load_training_state(folder: Path) -> dict[str, Any]:
    """Read and check ``training_state.pt`` of a checkpoint folder.

    Raises:
        CheckpointError: missing, unreadable, or not a Likeness training state.
    """
    path = Path(folder) / STATE_FILE
    state = load_file(path)
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a Likeness training state (no format {STATE_FORMAT!r}).")
    if int(state.get("version", -1)) != STATE_VERSION:
        raise CheckpointError(f"{path} has training-state version {state.get('version')}; expected {STATE_VERSION}.")
    missing = [k for k in ("step", "optimizer", "scheduler", "fingerprint") if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; the checkpoint is incomplete.")
    return dict(state)


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], folder: Path) -> None:
    """Refuse to resume a run whose data order or maths would differ from the saved one.

    Raises:
        LikenessError: naming every differing setting.
    """
    diff = {
        k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)
    }
    if diff:
        listed = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise LikenessError(
            f"Cannot resume from {folder}: the run settings differ ({listed}). Resume with the same settings, "
            "or start a new run in another --out folder (or pass --resume none to start over here)."
        )


class TrainLog:
    """``train_log.jsonl`` writer; on resume it first drops lines after the resumed step.

    Args:
        out: the run folder.
        resume_step: keep only lines with ``step <= resume_step`` (0: start a new log).
    """

    def __init__(self, out: Path, resume_step: int) -> None:
        self.path = Path(out) / LOG_FILE
        kept = []
        if resume_step > 0 and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line)["step"]) <= resume_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    logger.warning("training: dropping an unreadable line of %s: %r", self.path, line[:80])
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")


def read_log(out: Path) -> list[dict[str, Any]]:
    """The records of ``out/train_log.jsonl`` (for tests and tools)."""
    path = Path(out) / LOG_FILE
    if not path.is_file():
        raise LikenessError(f"{path} does not exist; no training has run in {out}.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cpu_state(state: Mapping[str, torch.Tensor]) -> OrderedDict:
    """A detached float32 CPU copy of a state dict (what a checkpoint stores)."""
    return OrderedDict((k, v.detach().float().cpu().clone()) for k, v in state.items())


def load_into(params: Mapping[str, torch.Tensor], state: Mapping[str, Any], what: str) -> None:
    """Copy a (nested) official-layout ``state`` into the tensors ``params`` (same flattened keys), strictly.

    Raises:
        CheckpointError: missing, unexpected or wrongly shaped keys (the first one is named).
    """
    flat = flatten(state)
    bad = sorted(set(flat) ^ set(params)) + [k for k in params if k in flat and flat[k].shape != params[k].shape]
    if bad:
        raise CheckpointError(f"the checkpoint does not fit this {what} (first differing key: {bad[0]}).")
    with torch.no_grad():
        for key, value in params.items():
            value.copy_(flat[key].to(value.dtype))
