"""The one exception type Likeness raises for problems a user can fix.

Every message says what went wrong, quotes the actual values (file, shape,
batch index) and says what to do next. ComfyUI shows the message in the UI,
so it is written for artists, not for developers.
"""

from __future__ import annotations

import re

__all__ = ["LikenessError", "MissingModelError", "CheckpointError", "NoFaceError", "InputError", "a_or_an"]

_ACRONYM_VOWEL_SOUND = set("AEFHILMNORSX")  # "an SD1.5", "an FFHQ", "an e4e" ...
_CONSONANT_U = ("uni", "use", "usu", "uint", "ut")  # ... but "a unit", "a user", "a uint8"


def a_or_an(phrase: str) -> str:
    """``phrase`` with the indefinite article its sound takes: ``"an e4e FFHQ encoder"``, ``"a W+ adapter"``."""
    word = phrase.lstrip("'\"([")
    token = (re.match(r"[A-Za-z0-9+]+", word) or [""])[0]
    if not token:
        return f"a {phrase}"
    first = token[0]
    if first.isupper() and (len(token) == 1 or token[:2].isupper() or any(c.isdigit() for c in token)):
        vowel = first in _ACRONYM_VOWEL_SOUND  # read letter by letter
    elif token.lower().startswith(("hour", "honest", "heir")):
        vowel = True
    elif first.lower() == "u":
        vowel = not token.lower().startswith(_CONSONANT_U)
    else:
        vowel = first.lower() in "aeio"
    return f"{'an' if vowel else 'a'} {phrase}"


class LikenessError(Exception):
    """A user-facing problem with an actionable message."""


class MissingModelError(LikenessError, FileNotFoundError):
    """A model file is not in any of the folders searched."""


class CheckpointError(LikenessError, ValueError):
    """A checkpoint file is corrupt, unsafe, or of the wrong architecture."""


class NoFaceError(LikenessError, ValueError):
    """No usable face was found and the user chose the ``error`` policy."""


class InputError(LikenessError, ValueError):
    """A value the user gave (a widget, a mask or SEGS input, an argument) is malformed or out of range.

    Also a ``ValueError``, so code that validated inputs with ``except ValueError`` keeps working.
    """
