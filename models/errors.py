"""The one exception type Likeness raises for problems a user can fix.

Every message says what went wrong, quotes the actual values (file, shape,
batch index) and says what to do next. ComfyUI shows the message in the UI,
so it is written for artists, not for developers.
"""

from __future__ import annotations

__all__ = ["LikenessError", "MissingModelError", "CheckpointError", "NoFaceError", "InputError"]


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
