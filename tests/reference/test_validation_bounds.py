"""The W+ magnitude bound of models/validation.py, derived from the real e4e codes and published directions.

Documents (and keeps true) the numbers in the module docstring: real codes within ±3.01, one edit at a
slider limit within ±40, so the bound 100 leaves a margin of 2.5x over the most extreme slider edit.
"""

from __future__ import annotations

import logging

import torch

from likeness.models.directions import Edit, discover_directions, edit
from likeness.models.inversion.codes import load_wplus
from likeness.models.validation import STRENGTH_LIMIT, WPLUS_ABS_LIMIT, check_wplus


def _real_codes(reference_dir) -> torch.Tensor:
    files = sorted((reference_dir / "latents").rglob("*.pth"))
    assert len(files) == 7, files
    return torch.cat([load_wplus(p).codes for p in files])  # load_wplus itself checks them


def test_real_e4e_codes_are_far_inside_the_bound(reference_dir):
    codes = _real_codes(reference_dir)
    peak = float(codes.abs().max())
    assert 2.5 < peak < 3.01  # the measured range the bound is derived from
    assert WPLUS_ABS_LIMIT / peak > 33
    check_wplus(codes, "real e4e codes")


def test_every_published_direction_at_the_slider_limits_stays_inside_the_bound(reference_dir, caplog):
    codes = _real_codes(reference_dir)
    with caplog.at_level(logging.ERROR):  # the refused StyleGAN v1 boundaries are logged as warnings
        catalog = discover_directions([reference_dir / "directions"])
    worst, checked = 0.0, 0
    for ds in catalog.sets.values():
        for d in ds.directions.values():
            modes = ("offset", "set") if d.kind == "ganspace" else ("offset",)
            for mode in modes:
                for s in (-STRENGTH_LIMIT, STRENGTH_LIMIT):
                    edited = edit(codes, [Edit(d, s)], ganspace_mode=mode)
                    worst = max(worst, float(edited.abs().max()))
                    checked += 1
    assert checked > 200  # InterFaceGAN, GANSpace (both modes), seeprettyface, PreciseControl, training bank
    assert 35 < worst < WPLUS_ABS_LIMIT / 2.5  # PreciseControl 'pose' at -30 reaches about 39.7
