"""ComfyUI glue shared by the fine-tuning nodes (FaceA-Net, SeFi-IDE).

* :class:`TrainingProgress`: the node's progress bar (steps done) with the loss curve as its
  preview image every few steps, and the running loss in the log;
* :func:`should_stop` / :func:`comfy_interruption`: ComfyUI's Cancel button stops
  ``models.finetune.train_loop`` between steps and surfaces as ComfyUI's own interruption;
* the ``likeness_identities`` model folder: where identity files are saved and listed;
* :func:`loss_curve_tensor`: the loss curve as an IMAGE output.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from PIL import Image

from ..models.files.registry import find_file
from ..models.finetune import StepReport, TrainingInterrupted, loss_curve_image
from .folders import file_list, search_paths

__all__ = [
    "IDENTITIES_FOLDER",
    "TrainingProgress",
    "should_stop",
    "comfy_interruption",
    "identity_names",
    "identity_path",
    "identity_save_path",
    "loss_curve_tensor",
]

logger = logging.getLogger(__name__)

IDENTITIES_FOLDER = "likeness_identities"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


class TrainingProgress:
    """``on_step`` callback for ``train_loop``: progress bar, loss-curve preview and log lines.

    Args:
        total_steps: steps of this run (the bar's maximum).
        first_step: global number of the run's first step (continued runs start above 1).
        preview_every: steps between loss-curve previews (default: about 20 previews per run).
        label: feature name for log lines (e.g. ``"FaceA"``).
    """

    def __init__(self, total_steps: int, first_step: int = 1, preview_every: int | None = None, label: str = ""):
        self.total = max(1, int(total_steps))
        self.first_step = int(first_step)
        self.every = max(1, int(preview_every or max(1, self.total // 20)))
        self.label = label or "training"
        self.losses: list[float] = []
        self.bar = comfy.utils.ProgressBar(self.total)

    def preview(self) -> tuple[str, Image.Image, int]:
        """The loss curve so far as a ComfyUI progress preview ``("PNG", image, max size)``."""
        curve = loss_curve_image(self.losses, 512, 256, first_step=self.first_step, title=self.label)
        return ("PNG", Image.fromarray(curve), 512)

    def __call__(self, report: StepReport) -> None:
        self.losses.append(report.loss)
        done = len(self.losses)
        preview = self.preview() if done % self.every == 0 or done == self.total else None
        if preview is not None:
            parts = ", ".join(f"{k} {v:.4f}" for k, v in report.parts.items())
            logger.info(
                "%s: step %d/%d loss %.4f%s",
                self.label,
                report.step,
                self.first_step + self.total - 1,
                report.loss,
                f" ({parts})" if parts else "",
            )
        self.bar.update_absolute(done, self.total, preview)


def should_stop() -> bool:
    """True once the user pressed Cancel (polled by ``train_loop`` before every step)."""
    return comfy.model_management.processing_interrupted()


@contextmanager
def comfy_interruption() -> Iterator[None]:
    """Turn ``TrainingInterrupted`` into ComfyUI's own interruption (so the UI shows 'interrupted')."""
    try:
        yield
    except TrainingInterrupted:
        comfy.model_management.throw_exception_if_processing_interrupted()
        raise


def identity_names() -> list[str]:
    """Identity files ComfyUI lists in ``likeness_identities`` (for combo inputs)."""
    return file_list(IDENTITIES_FOLDER)


def identity_path(name: str) -> Path:
    """Resolve a listed identity name to its file (MissingModelError naming the folders searched)."""
    return find_file(IDENTITIES_FOLDER, name, search_paths())


def identity_save_path(name: str, overwrite: bool = False) -> Path:
    """Where Save Identity writes ``name``: the first ``likeness_identities`` folder.

    The name is reduced to safe characters and gets ``.safetensors``; without ``overwrite`` an
    existing file is kept and the new one is numbered ``<name>_00001.safetensors``, ``_00002``, ...
    """
    stem = _SAFE_NAME.sub("_", Path(str(name).strip()).name).strip(" .") or "identity"
    stem = stem.removesuffix(".safetensors") or "identity"
    folders = folder_paths.get_folder_paths(IDENTITIES_FOLDER)
    folder = Path(folders[0]) if folders else Path(folder_paths.models_dir) / IDENTITIES_FOLDER
    target = folder / f"{stem}.safetensors"
    if overwrite or not target.exists():
        return target
    n = 1
    while (folder / f"{stem}_{n:05d}.safetensors").exists():
        n += 1
    return folder / f"{stem}_{n:05d}.safetensors"


def loss_curve_tensor(losses: Sequence[float], first_step: int = 1, title: str = "loss") -> torch.Tensor:
    """The loss curve as a ComfyUI IMAGE ``[1, 256, 512, 3]`` float32 in [0, 1]."""
    curve = loss_curve_image(losses, 512, 256, first_step=first_step, title=title)
    return torch.from_numpy(curve.astype(np.float32) / 255.0)[None]
