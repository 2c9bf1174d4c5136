"""Fixtures shared by the unit tests of the trainers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The smoke trainings are tiny: one thread avoids oversubscription on shared CI machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def cli_run():
    """Run a ``models.cli`` command without main()'s error handler, so LikenessError reaches pytest.raises."""
    from likeness.tools.cli import build_parser

    def run(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    return run
