"""Message quality: user-facing errors have no doubled words, no "a e4e" articles and no lists over 20 items.

Two sources: every ``raise ...Error(<text>)`` site (and every text a ``validate_inputs`` returns) in models/,
nodes/ and tools/, read from the source with the formatted values left out; and real messages, collected by
triggering the errors of hostile inputs (where the values are filled in, e.g. "the {other} backend").
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from likeness.models.errors import LikenessError

ROOT = Path(__file__).resolve().parents[2]
HOLE = "\x00"  # where a formatted value goes in a message read from the source
MAX_LIST = 20
_CONSONANT_SOUND = re.compile(r"^(one|once|uni|use|usu|uint|ut|eu)", re.IGNORECASE)
_VOWEL_SOUND_H = re.compile(r"^(hour|honest|heir)", re.IGNORECASE)
_ACRONYM = re.compile(r"^[A-Z][A-Z0-9]")  # read letter by letter: "an SD1.5", "a PSFRGAN"
_TYPE_WORDS = {"MASK", "SEG", "SEGS", "IMAGE", "LATENT", "MODEL", "CLIP", "CONDITIONING", "FACES", "WPLUS"}  # words


def message_problems(text: str) -> list[str]:
    """What is wrong with a message: doubled words, a/an before the wrong sound, lists over 20 items."""
    problems = []
    for match in re.finditer(r"\b([A-Za-z]+)\s+\1\b", text, flags=re.IGNORECASE):
        problems.append(f"doubled word {match.group(0)!r}")
    for match in re.finditer(r"(?<![\w'-])(a|an|A|An) [\"'(\[]?([A-Za-z][\w+.-]*)", text):
        article, word = match.group(1).lower(), match.group(2)
        if _ACRONYM.match(word) and word.rstrip(".") not in _TYPE_WORDS:
            vowel = word[0] in "AEFHILMNORSX"
        elif _CONSONANT_SOUND.match(word):
            vowel = False
        elif _VOWEL_SOUND_H.match(word):
            vowel = True
        else:
            vowel = word[0].lower() in "aeiou"
        if vowel != (article == "an"):
            problems.append(f"article {match.group(0)!r}")
    for match in re.finditer(r"(?:[\w.'\"+-]{1,40}, ){%d,}[\w.'\"+-]{1,40}" % MAX_LIST, text):
        problems.append(f"a list of {match.group(0).count(', ') + 1} items")
    return problems


def test_the_checker_finds_each_kind_of_problem():
    assert message_problems("Try: the the other backend.") == ["doubled word 'the the'"]
    assert message_problems("x.pt is not a e4e FFHQ encoder checkpoint") == ["article 'a e4e'"]
    assert message_problems("holds an list") == ["article 'an list'"]
    assert message_problems("a IMAGE, an MASK, a SD1.5") == [
        "article 'a IMAGE'",
        "article 'an MASK'",
        "article 'a SD1.5'",
    ]
    assert message_problems("add a 'e4e:' entry") == ['article "a \'e4e"']
    rows = ", ".join(str(r) for r in range(18, 120))
    assert message_problems(f"W+ rows must be between 0 and 17; got [{rows}]") == ["a list of 102 items"]
    fine = "an e4e file, a W+ code, an SD1.5 model, a unit normal, an int, a PSFRGAN net, an hour; rows 0, 1, 2."
    assert message_problems(fine) == []


# ---- every raise site, read from the source ------------------------------------------------------------------


def _text(node: ast.AST) -> str | None:
    """The literal text of a message expression, formatted values as HOLE; None when it is not a text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else HOLE for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else HOLE) + (right if right is not None else HOLE)
    return None


def _source_messages() -> list[tuple[str, str]]:
    found = []
    for folder in ("models", "nodes", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                call = node.exc if isinstance(node, ast.Raise) else None
                if isinstance(call, ast.Call) and call.args:
                    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
                    if name.endswith("Error") or name.endswith("Rejected") or name.endswith("Failed"):
                        text = _text(call.args[0])
                        if text:
                            found.append((f"{path.relative_to(ROOT)}:{node.lineno}", text))
                if isinstance(node, ast.FunctionDef) and node.name == "validate_inputs":
                    for ret in ast.walk(node):
                        text = _text(ret.value) if isinstance(ret, ast.Return) and ret.value is not None else None
                        if text:
                            found.append((f"{path.relative_to(ROOT)}:{ret.lineno}", text))
    return found


def test_raise_sites_read_from_the_source_are_clean():
    messages = _source_messages()
    assert len(messages) > 200  # the scan reaches the whole pack
    bad = []
    for where, text in messages:
        for part in text.split(HOLE):  # a formatted value can hide a word: check the literal runs only
            bad += [f"{where}: {p} in {text.replace(HOLE, '{}')!r}" for p in message_problems(part)]
    assert not bad, "\n".join(bad)


# ---- real messages, triggered ------------------------------------------------------------------------------


def _triggers(tmp_path: Path):
    """Callables that each raise a user-facing error of a hostile input."""
    from safetensors.torch import save_file

    from likeness.models.directions import Direction, resolve_rows, sweep
    from likeness.models.face import apply_policy
    from likeness.models.files.checkpoints import load_file
    from likeness.models.files.registry import find_file
    from likeness.models.images import check_image_batch
    from likeness.models.inversion.codes import WPlusCodes, load_wplus, wplus_input
    from likeness.models.inversion.e4e_model import load_e4e
    from likeness.models.preview.live import parse_request
    from likeness.models.validation import check_wplus, parse_edit_lines, parse_strengths
    from likeness.models.wplus_adapter.model import load_wplus_adapter

    def wplus_file(name, metadata=None, value=None):
        codes = torch.zeros(1, 18, 512)
        if value is not None:
            codes[0, 0, 0] = value
        save_file({"wplus": codes}, str(tmp_path / name), metadata=metadata)
        return tmp_path / name

    np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": {"x": torch.zeros(1)}, "latent_avg": torch.zeros(18, 512)}, tmp_path / "e4e.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "broken.pt").symlink_to(tmp_path / "gone.pt")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.json").write_text(json.dumps({"a": "b"}))
    direction = Direction(name="age", vector=torch.ones(18, 512))
    sizes = [(64, 64)] * 30
    return [
        lambda: apply_policy([[]] * 30, "error", sizes, backend="embedded"),
        lambda: apply_policy([[]] * 30, "error", sizes, backend="insightface"),
        lambda: apply_policy([[]] * 30, "error", sizes),
        lambda: apply_policy([[]] * 30, "skip", sizes, where="Face Refine"),
        lambda: load_e4e(tmp_path / "tensor.pt"),
        lambda: load_e4e(tmp_path / "e4e.pt"),
        lambda: load_e4e(tmp_path / "list.pt"),
        lambda: load_wplus_adapter(tmp_path / "list.pt"),
        lambda: load_wplus_adapter(tmp_path / "e4e.pt"),
        lambda: resolve_rows("99-200"),
        lambda: resolve_rows(range(18, 120)),
        lambda: load_file(tmp_path / "evil.npy"),
        lambda: load_file(tmp_path / "folder.pt"),
        lambda: load_file(tmp_path / "broken.pt"),
        lambda: find_file("e4e", "folder.pt", {"e4e": [tmp_path]}),
        lambda: find_file("e4e", "broken.pt", {"e4e": [tmp_path]}),
        lambda: find_file("likeness_directions", "nope.pt", {"likeness_directions": [tmp_path]}),
        lambda: load_wplus(wplus_file("a.safetensors", {"labels": "not json"})),
        lambda: load_wplus(wplus_file("b.safetensors", {"labels": "5"})),
        lambda: load_wplus(wplus_file("c.safetensors", {"meta": "[1, 2]"})),
        lambda: load_wplus(wplus_file("d.safetensors", value=float("nan"))),
        lambda: load_wplus(wplus_file("e.safetensors", value=1e30)),
        lambda: load_wplus(tmp_path / "list.pt"),
        lambda: wplus_input({"x": 1}, "Apply W+ Adapter input 'wplus'"),
        lambda: WPlusCodes(torch.zeros(2, 18, 512), absent=(0, 1)).only_present("Save W+ input 'wplus'"),
        lambda: WPlusCodes(torch.zeros(0, 18, 512)),
        lambda: check_wplus(torch.full((1, 18, 512), float("inf")), "Load W+"),
        lambda: parse_strengths("0:inf:1", "Attribute Sweep input 'strengths'"),
        lambda: parse_strengths("0:1e300:1e-300", "Attribute Sweep input 'strengths'"),
        lambda: parse_strengths(",".join(["1"] * 300), "Attribute Sweep input 'strengths'"),
        lambda: parse_edit_lines("age 1e300", "Edit Attributes input 'extra_edits'"),
        lambda: parse_edit_lines("age 1e6", "Edit Attributes input 'extra_edits'"),
        lambda: sweep(torch.zeros(2, 18, 512), direction, "-30:30:0.25"),
        lambda: check_image_batch(torch.zeros(0, 8, 8, 3), "Face Refine input 'image'"),
        lambda: check_image_batch(torch.zeros(1, 8, 8, 7), "Invert Face input 'image'"),
        lambda: parse_request({"source": {"node": "1"}, "edits": [{"attribute": "age", "strength": 1e6}]}),
    ]


def test_triggered_messages_are_clean(tmp_path):
    messages = []
    for trigger in _triggers(tmp_path):
        with pytest.raises(LikenessError) as err:
            trigger()
        messages.append(str(err.value))
    bad = [f"{p} in {m!r}" for m in messages for p in message_problems(m)]
    assert not bad, "\n".join(bad)
    assert all(len(m) < 2000 for m in messages)
