"""Attribute directions in StyleGAN2-FFHQ W+: file formats, discovery, and the edit maths.

* :mod:`.types`: :class:`Direction`, :class:`DirectionSet`, row presets and row parsing.
* :mod:`.formats`: every published direction format, recognised by content.
* :mod:`.ganspace`: GANSpace PCA and configs files.
* :mod:`.likeness_file`: the Likeness ``.safetensors`` direction file.
* :mod:`.discovery`: the catalogue of direction sets found under the model folders.
* :mod:`.edit`: ``w' = w + s * d`` on selected rows, GANSpace, sweeps, mixing.
"""

from .discovery import DirectionCatalog, DirectionProblem, discover_directions
from .edit import (
    GANSPACE_MODES,
    Edit,
    Sweep,
    edit,
    edit_delta,
    format_strength,
    ganspace_delta,
    grid_sweep,
    mix,
    orthogonalize,
    parse_strengths,
    sweep,
)
from .formats import directions_from_object, load_directions
from .ganspace import E4E_DEMO_GANSPACE_CONFIGS, load_ganspace_configs, load_ganspace_set
from .likeness_file import save_direction
from .types import ROW_PRESETS, Direction, DirectionSet, GanspaceParams, resolve_rows, rows_to_str

__all__ = [
    "Direction",
    "DirectionSet",
    "GanspaceParams",
    "DirectionCatalog",
    "DirectionProblem",
    "ROW_PRESETS",
    "E4E_DEMO_GANSPACE_CONFIGS",
    "GANSPACE_MODES",
    "Edit",
    "Sweep",
    "resolve_rows",
    "rows_to_str",
    "load_directions",
    "load_ganspace_configs",
    "load_ganspace_set",
    "directions_from_object",
    "save_direction",
    "discover_directions",
    "ganspace_delta",
    "edit",
    "edit_delta",
    "orthogonalize",
    "sweep",
    "grid_sweep",
    "parse_strengths",
    "format_strength",
    "mix",
]
