"""The validation layer (models/validation.py): W+ values, strengths, sweep ranges, edit lines, sweep sizes."""

from __future__ import annotations

import math

import pytest
import torch

from likeness.models.directions import Direction, grid_sweep, parse_strengths, sweep
from likeness.models.errors import InputError, LikenessError
from likeness.models.validation import (
    MAX_SWEEP_POINTS,
    STRENGTH_LIMIT,
    WPLUS_ABS_LIMIT,
    check_number,
    check_strength,
    check_sweep_size,
    check_wplus,
    parse_edit_lines,
    quoted,
)

SWEEP = "Attribute Sweep input 'strengths'"


def test_limits_match_the_widgets():
    from likeness.models.preview.live import MAX_ABS_STRENGTH

    assert STRENGTH_LIMIT == 30.0 and MAX_ABS_STRENGTH == STRENGTH_LIMIT  # Edit Attributes' sliders are -30..30
    assert MAX_SWEEP_POINTS == 256 and WPLUS_ABS_LIMIT == 100.0


@pytest.mark.parametrize(
    ("value", "kind"),
    [(float("nan"), "1 NaN"), (float("inf"), "1 infinite"), (float("-inf"), "1 infinite")],
)
def test_non_finite_w_plus_is_refused_with_its_place(value, kind):
    codes = torch.zeros(2, 18, 512)
    codes[1, 3, 17] = value
    with pytest.raises(InputError) as err:
        check_wplus(codes, "Apply W+ Adapter input 'wplus'", source="bad.safetensors")
    text = str(err.value)
    assert text.startswith("Apply W+ Adapter input 'wplus' (file bad.safetensors): the W+ code holds " + kind)
    assert "first at code 1, row 3, column 17" in text and "invert the photo again" in text


def test_huge_w_plus_is_refused_with_the_bound_and_the_value():
    codes = torch.randn(1, 18, 512)
    codes[0, 5, 9] = 3e30
    with pytest.raises(InputError, match=r"W\+ value 3e\+30 at code 0, row 5, column 9 is beyond ±100"):
        check_wplus(codes, "Load W+")
    codes[0, 5, 9] = -100.5
    with pytest.raises(InputError, match=r"value -100.5 "):
        check_wplus(codes, "Load W+", fix="Lower the strengths.")


def test_sane_w_plus_passes_including_the_bound_itself():
    codes = torch.randn(4, 18, 512).clamp(-3, 3)
    codes[0, 0, 0] = WPLUS_ABS_LIMIT
    check_wplus(codes, "x")
    check_wplus(codes[0], "a single [18,512] code")


def test_numbers():
    assert check_number("2.5", "w", 0, 3) == 2.5
    with pytest.raises(InputError, match=r"^w: 'abc' is not a number; give a value in 0..3.$"):
        check_number("abc", "w", 0, 3)
    with pytest.raises(InputError, match=r"^w: 'nan' is not a finite number; give a value in 0..3.$"):
        check_number(float("nan"), "w", 0, 3)
    with pytest.raises(InputError, match=r"^w: 4 is outside 0..3, the widget's range.$"):
        check_number(4, "w", 0, 3, "the widget's range")
    with pytest.raises(InputError, match=r"outside >= 0"):
        check_number(-1, "w", lo=0)
    assert check_strength(-30, "s") == -30.0
    with pytest.raises(InputError, match=r"1e\+06 is outside -30..30, the range of the strength sliders"):
        check_strength(1e6, "s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-4:4:2", [-4.0, -2.0, 0.0, 2.0, 4.0]),
        ("-1:1", [-1.0, 0.0, 1.0]),
        ("1:-1", [1.0, 0.0, -1.0]),
        ("0:1:0.3", [0.0, 0.3, 0.6, 0.9]),
        ("-2, 0; 2", [-2.0, 0.0, 2.0]),
        ("1.5", [1.5]),
        ("-30:30:60", [-30.0, 30.0]),
        (2, [2.0]),
        ([1, -3], [1.0, -3.0]),
    ],
)
def test_strengths_are_read(text, expected):
    assert parse_strengths(text, SWEEP) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:inf:1", r"= '0:inf:1', stop: 'inf' is not a finite number"),
        ("0:1e300:1e-300", r"= '0:1e300:1e-300', stop: 1e\+300 is outside -30..30"),  # OverflowError before
        ("0:1e300", r"stop: 1e\+300 is outside -30..30"),
        ("-1e300:0", r"start: -1e\+300 is outside -30..30"),
        ("0:30:1e-300", r"gives more than 256 values"),
        ("0:30:5e-324", r"gives more than 256 values"),
        ("0:1:nan", r"step: 'nan' is not a finite number"),
        ("0:1:0", r"step 0 never goes from 0 to 1"),
        ("0:1:-1", r"step -1 never goes from 0 to 1"),
        ("1e6", r"= '1e6': 1e\+06 is outside -30..30, the range of the strength sliders"),
        ("nan", r"'nan' is not a finite number"),
        ("1:2:3:4", r"use start:stop or start:stop:step"),
        (",", r"no numbers"),
        ("a,b", r"'a' is not a number"),
        (",".join(["1"] * 257), r"257 values; at most 256"),
        ([float("inf")], r"'inf' is not a finite number"),
        ([], r"no strengths given"),
    ],
)
def test_bad_strengths_name_the_input_and_the_value(text, message):
    with pytest.raises(InputError, match=message) as err:
        parse_strengths(text, SWEEP)
    assert str(err.value).startswith(SWEEP) and "'-4:4:2'" in str(err.value)


def test_long_texts_are_cut_in_messages():
    text = ",".join(["1"] * 300)
    with pytest.raises(InputError) as err:
        parse_strengths(text, SWEEP)
    assert len(str(err.value)) < 400 and ",...'" in str(err.value)
    assert quoted("abc") == "'abc'" and quoted("x" * 100, 10) == "'xxxxxxxxxx...'"


def test_edit_lines():
    lines = parse_edit_lines("age +3 0-7\n# comment\n\nsmile=-1   # trailing\n", "extra_edits")
    assert [(e.name, e.strength, e.rows, e.line) for e in lines] == [
        ("age", 3.0, "0-7", 1),
        ("smile", -1.0, "default", 4),
    ]
    cases = {
        "age 1e300": r"^extra_edits, line 1 'age 1e300', strength: 1e\+300 is outside -30..30",
        "age 1e6": r"strength: 1e\+06 is outside -30..30, the range of the strength sliders",
        "age nan": r"strength: 'nan' is not a finite number",
        "age": r"write 'name strength \[rows\]'",
        "age 1 0-7 extra": r"write 'name strength \[rows\]'",
        "\n\nage x": r"line 3 'age x', strength: 'x' is not a number",
    }
    for text, message in cases.items():
        with pytest.raises(InputError, match=message):
            parse_edit_lines(text, "extra_edits")


def test_sweep_sizes_are_bounded():
    check_sweep_size(MAX_SWEEP_POINTS, "sweep")
    with pytest.raises(InputError, match=r"^sweep: 257 sweep points .* at most 256"):
        check_sweep_size(MAX_SWEEP_POINTS + 1, "sweep")
    d = Direction(name="age", vector=torch.ones(18, 512) * 0.01)
    codes = torch.zeros(2, 18, 512)
    with pytest.raises(InputError, match="sweep of 'age': 482 sweep points"):
        sweep(codes, d, "-30:30:0.25")
    with pytest.raises(InputError, match=r"grid of .age. x .age.: 496 sweep points"):
        grid_sweep(torch.zeros(1, 18, 512), d, "0:15:1", d, "0:30:1")
    assert sweep(codes, d, [1.0, 2.0]).wplus.shape == (4, 18, 512)


def test_edit_still_refuses_non_finite_strengths_from_python():
    from likeness.models.directions import Edit, edit

    d = Direction(name="age", vector=torch.ones(18, 512))
    with pytest.raises(LikenessError, match="finite"):
        edit(torch.zeros(1, 18, 512), [Edit(d, math.inf)])
