"""e4e precision: low precision only where the device runs it natively, else fp32 with a note."""

from __future__ import annotations

import logging

import pytest
import torch

from likeness.models.inversion import precision as prec


@pytest.fixture
def cpu_support(monkeypatch):
    state = {"bf16": False, "fp16": False}
    monkeypatch.setattr(prec, "cpu_low_precision_support", lambda: dict(state))
    return state


def test_auto_on_a_cpu_without_bf16_is_fp32_and_says_why(cpu_support):
    p = prec.resolve_precision("auto", "cpu")
    assert p.dtype == torch.float32 and p.name == "fp32"
    assert p.note == "e4e precision auto: fp32 (no fast bf16/fp16 on this CPU)"


def test_auto_on_a_cpu_with_onednn_bf16_is_bf16(cpu_support):
    cpu_support["bf16"] = True
    p = prec.resolve_precision("auto", torch.device("cpu"))
    assert p.dtype == torch.bfloat16
    assert "bf16" in p.note and "oneDNN" in p.note


def test_explicit_bf16_on_a_cpu_without_it_falls_back_to_fp32_with_a_warning(cpu_support, caplog):
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        p = prec.resolve_precision("bf16", "cpu")
    assert p.dtype == torch.float32 and p.requested == "bf16"
    assert "bf16 requested" in p.note and "ran in fp32" in p.note
    assert p.note in caplog.text
    fp16 = prec.resolve_precision("fp16", "cpu")
    assert fp16.dtype == torch.float32 and "fp16 requested" in fp16.note


def test_explicit_choices_that_are_fast_are_kept_without_a_note(cpu_support):
    cpu_support["bf16"] = True
    assert prec.resolve_precision("bf16", "cpu") == prec.Precision("bf16", torch.bfloat16, "")
    assert prec.resolve_precision("fp32", "cpu") == prec.Precision("fp32", torch.float32, "")
    assert prec.fast_low_precision(torch.device("cuda")) == torch.float16  # no GPU needed to decide


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        prec.resolve_precision("int8", "cpu")


def test_the_probe_answers_with_booleans_on_this_machine():
    support = prec.cpu_low_precision_support()
    assert set(support) == {"bf16", "fp16"} and all(isinstance(v, bool) for v in support.values())
