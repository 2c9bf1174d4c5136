"""The sample order and the random generators of a training run, as pure functions of (seed, position).

A run reads an endless stream of epoch permutations of the dataset. Micro-step ``m`` of a run on
``world`` processes with ``batch`` samples each consumes the stream positions
``[m * world * batch, (m + 1) * world * batch)``; process ``rank`` takes
``[m * world * batch + rank * batch, ... + batch)``. Every random choice of a sample (caption,
dropout, augmentation) comes from a generator seeded by ``(seed, position)``, and every random choice
of a step (timesteps, noise, perturbations) from one seeded by ``(seed, micro_step, rank)``. So a run
resumed at step ``s`` sees exactly the data and noise it would have seen without the interruption.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["SampleOrder", "PositionSampler", "PositionDataset", "sample_rng", "step_generator", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (NumPy's SeedSequence hashing; stable across platforms)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SampleOrder:
    """Dataset index at each stream position: epoch ``e`` is ``permutation(n)`` under seed ``(seed, e)``.

    Args:
        n: number of dataset items (>= 1).
        seed: run seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"need at least one item, got {n}")
        self.n, self.seed = int(n), int(seed)
        self._epoch, self._perm = -1, np.arange(0)

    def index(self, position: int) -> int:
        """Dataset index at stream ``position`` (>= 0)."""
        epoch, offset = divmod(int(position), self.n)
        if epoch != self._epoch:
            self._perm = np.random.default_rng(mix_seed(self.seed, 0x5EED, epoch)).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[offset])


def sample_rng(seed: int, position: int) -> np.random.Generator:
    """The generator for everything random about the sample at stream ``position``."""
    return np.random.default_rng(mix_seed(seed, 0xDA7A, position))


def step_generator(seed: int, micro_step: int, rank: int, device: torch.device | str) -> torch.Generator:
    """A torch generator on ``device`` for the random choices of one micro-step on one process."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(mix_seed(seed, 0x57E9, micro_step, rank))
    return gen


class PositionSampler(Sampler[int]):
    """The stream positions of one process from micro-step ``start`` on (for a DataLoader of ``batch``).

    Args:
        start: first micro-step (a resumed run starts at ``global_step * accumulation``).
        stop: one past the last micro-step.
        batch: samples per process per micro-step.
        world: number of processes.
        rank: this process.
    """

    def __init__(self, start: int, stop: int, batch: int, world: int, rank: int) -> None:
        self.start, self.stop, self.batch, self.world, self.rank = start, stop, batch, world, rank

    def __iter__(self) -> Iterator[int]:
        for micro in range(self.start, self.stop):
            first = (micro * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch


class PositionDataset(Dataset):
    """Map-style view: stream position -> ``make(dataset_index, rng)`` (works with DataLoader workers).

    Args:
        make: builds one sample from a dataset index and its generator.
        order: the :class:`SampleOrder`.
        seed: run seed (for :func:`sample_rng`).
    """

    def __init__(self, make, order: SampleOrder, seed: int) -> None:
        self.make, self.order, self.seed = make, order, seed

    def __len__(self) -> int:
        return 2**62  # positions are unbounded; the sampler decides which are read

    def __getitem__(self, position: int):
        return self.make(self.order.index(position), sample_rng(self.seed, position))
