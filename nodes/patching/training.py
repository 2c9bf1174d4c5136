"""Helpers shared by the test-time training patches (FaceA-Net, SeFi-IDE).

ComfyUI runs nodes under ``torch.inference_mode``, so every weight a loader node created is an
inference tensor, and autograd refuses to save inference tensors for backward, even frozen ones
that only pass gradients through. While training, such modules get ordinary copies of their
parameters and buffers (same values); the originals are put back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ordinary_weights", "restore_weights", "ordinary_module"]

Swapped = list[tuple[torch.nn.Module, str, str, torch.Tensor]]


def ordinary_weights(module: torch.nn.Module) -> Swapped:
    """Replace inference-mode parameters/buffers by ordinary copies; returns what to put back."""
    swapped = []
    for mod in module.modules():
        for kind, store in (("p", mod._parameters), ("b", mod._buffers)):
            for name, t in list(store.items()):
                if t is not None and t.is_inference():
                    swapped.append((mod, kind, name, t))
                    copy = t.detach().clone()
                    store[name] = torch.nn.Parameter(copy, requires_grad=False) if kind == "p" else copy
    return swapped


def restore_weights(swapped: Swapped) -> None:
    """Put back what :func:`ordinary_weights` replaced."""
    for mod, kind, name, t in reversed(swapped):
        (mod._parameters if kind == "p" else mod._buffers)[name] = t


@contextmanager
def ordinary_module(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with ordinary weights inside the block (created outside inference mode), restored after."""
    with torch.inference_mode(False):
        swapped = ordinary_weights(module)
        try:
            yield module
        finally:
            restore_weights(swapped)
