"""Finding the placeholder V* in a tokenised prompt and turning it into one embedding slot.

How V* positions are found (the design, used by the Apply and Learn nodes):

1. **Text**: every occurrence of the placeholder string that is not glued to a letter,
   digit or underscore (``V*`` in "a V*, smiling" or "(V*:1.2)", not in "XV*Y") is
   surrounded by spaces (:func:`isolate_placeholder`), so the CLIP tokenizer sees it as
   a word of its own and gives it the same token ids as when tokenised alone
   (without the spaces "V*," would become the tokens "v" "*,").
2. **Tokens**: the placeholder tokenised alone gives its id pattern (e.g. ``v</w> *</w>``);
   each occurrence of the pattern inside a 77-token section is replaced by **one**
   entry holding a marker tensor (:func:`replace_spans`), the way ComfyUI's tokenised
   prompts carry textual-inversion vectors; the section is padded at its end so it keeps
   its length. The prompt weight of the first placeholder token is kept.
3. **Encoding**: the marker is swapped for the vector to use (a stage's key or value
   token, or the base vector) just before the frozen text encoder runs
   (:func:`substitute`).

An occurrence split across two 77-token sections cannot be found in either; that is
reported (:class:`~models.errors.LikenessError`) rather than silently ignored.

Token entries are tuples ``(token, weight)`` or ``(token, weight, word_id)`` where token
is an ``int`` or a tensor, as ComfyUI's ``tokenize_with_weights`` returns them.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import LikenessError

__all__ = [
    "PLACEHOLDER_FORBIDDEN",
    "check_placeholder",
    "count_placeholder",
    "isolate_placeholder",
    "find_spans",
    "replace_spans",
    "substitute",
    "marker_positions",
]

Entry = tuple[Any, ...]
Section = list[Entry]
PLACEHOLDER_FORBIDDEN = "()[]{}:\\"


def check_placeholder(placeholder: str) -> str:
    """Return the placeholder stripped; raise when it cannot be found reliably in prompts."""
    p = placeholder.strip()
    if not p or any(c.isspace() for c in p) or any(c in PLACEHOLDER_FORBIDDEN for c in p):
        raise LikenessError(
            f"Placeholder {placeholder!r} cannot be used: give one word without spaces and without any of "
            f"{PLACEHOLDER_FORBIDDEN!r} (those are prompt-weight syntax), e.g. 'V*' or 'sks'."
        )
    return p


def _pattern(placeholder: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + re.escape(placeholder) + r"(?![\w])")


def count_placeholder(text: str, placeholder: str) -> int:
    """How many stand-alone occurrences of ``placeholder`` the text holds."""
    return len(_pattern(placeholder).findall(text))


def isolate_placeholder(text: str, placeholder: str) -> str:
    """``text`` with a space on both sides of every stand-alone occurrence of ``placeholder``."""
    return _pattern(placeholder).sub(lambda m: f" {m.group(0)} ", text)


def find_spans(tokens: Sequence[Any], pattern: Sequence[int]) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` spans where the integer ``pattern`` occurs in ``tokens``.

    Non-integer tokens (tensors) never match.
    """
    n = len(pattern)
    if n == 0:
        raise ValueError("empty token pattern")
    spans: list[tuple[int, int]] = []
    i = 0
    while i + n <= len(tokens):
        window = tokens[i : i + n]
        if all(isinstance(t, numbers.Integral) and int(t) == p for t, p in zip(window, pattern, strict=True)):
            spans.append((i, i + n))
            i += n
        else:
            i += 1
    return spans


def replace_spans(sections: Sequence[Section], pattern: Sequence[int], marker: Any) -> tuple[list[Section], int]:
    """Replace each occurrence of ``pattern`` by one entry holding ``marker``.

    Args:
        sections: the prompt's token sections (lists of ``(token, weight[, word_id])``).
        pattern: the placeholder's token ids.
        marker: the object to put in the slot (a tensor, for ComfyUI's encoder).

    Returns:
        ``(new sections, occurrences replaced)``; each section keeps its length (the last
        entry of the section is repeated at its end as padding).
    """
    out: list[Section] = []
    found = 0
    for section in sections:
        spans = find_spans([e[0] for e in section], pattern)
        if not spans:
            out.append(list(section))
            continue
        new: Section = []
        pos = 0
        for start, end in spans:
            new.extend(section[pos:start])
            first = section[start]
            new.append((marker, *first[1:]))
            pos = end
        new.extend(section[pos:])
        pad = section[-1]
        pad = (pad[0], 1.0, *((0,) if len(pad) > 2 else ()))
        new.extend([pad] * (len(section) - len(new)))
        out.append(new)
        found += len(spans)
    return out, found


def marker_positions(sections: Sequence[Section], markers: Sequence[Any]) -> list[tuple[int, int, int]]:
    """``(section, position, marker index)`` of every slot holding one of ``markers`` (compared by identity)."""
    where = []
    for s, section in enumerate(sections):
        for i, entry in enumerate(section):
            for m, marker in enumerate(markers):
                if entry[0] is marker:
                    where.append((s, i, m))
    return where


def substitute(
    sections: Sequence[Section], markers: Sequence[Any], vectors: Callable[[int], Any] | Mapping[int, Any]
) -> list[Section]:
    """Copies of ``sections`` with the slot of marker ``m`` holding ``vectors[m]`` (or ``vectors(m)``)."""
    pick = vectors if callable(vectors) else vectors.__getitem__
    out = [list(section) for section in sections]
    for s, i, m in marker_positions(sections, markers):
        entry = out[s][i]
        out[s][i] = (pick(m), *entry[1:])
    return out
