"""Live preview of attribute edits for the frontend: request checks, W+ sources, cached models, rendering.

ComfyUI-free; ``nodes/routes.py`` wires it to ComfyUI's HTTP server and model folders. A preview is a W+ code
(the last output of an Invert Face / Load W+ node in this server session, or a saved W+ file) plus a list of
edits, rendered as a PNG by the e4e StyleGAN2 decoder at a small size (256 px by default).
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..directions import DirectionSet, Edit, edit, rows_to_str
from ..directions.discovery import DirectionCatalog
from ..directions.index import cached_catalog
from ..errors import LikenessError
from ..inversion.codes import WPlusCodes
from ..validation import STRENGTH_LIMIT, check_wplus

__all__ = [
    "MAX_BODY_BYTES",
    "PreviewError",
    "PreviewRequest",
    "Models",
    "parse_request",
    "remember_wplus",
    "recent_sources",
    "directions_payload",
    "render_png",
]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_EDITS = 16
MAX_ABS_STRENGTH = STRENGTH_LIMIT  # the strength sliders' range, as on the nodes
MAX_NAME_CHARS = 256
SIZE_RANGE = (64, 512)
MAX_REMEMBERED = 64
GANSPACE_MODES = ("offset", "set")

_LAST_WPLUS: OrderedDict[str, tuple[str, WPlusCodes]] = OrderedDict()
_LAST_LOCK = threading.Lock()


class PreviewError(LikenessError):
    """A preview request that cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def remember_wplus(node_id: str | None, node_class: str, wplus: WPlusCodes) -> None:
    """Keep the last W+ output of a node (by its prompt id) for previews; the oldest of 64 nodes is dropped."""
    if not node_id or not wplus.present:
        return
    with _LAST_LOCK:
        _LAST_WPLUS[str(node_id)] = (node_class, wplus)
        _LAST_WPLUS.move_to_end(str(node_id))
        while len(_LAST_WPLUS) > MAX_REMEMBERED:
            _LAST_WPLUS.popitem(last=False)


def recent_sources() -> dict[str, dict[str, Any]]:
    """``{node id: {class, batch, labels}}`` of the W+ outputs kept for previews."""
    with _LAST_LOCK:
        return {
            nid: {"class": cls, "batch": w.batch, "labels": list(w.labels)} for nid, (cls, w) in _LAST_WPLUS.items()
        }


def _last_wplus(node_id: str) -> WPlusCodes | None:
    with _LAST_LOCK:
        found = _LAST_WPLUS.get(node_id)
    return found[1] if found else None


@dataclass(frozen=True)
class PreviewRequest:
    """A checked ``POST /likeness/preview`` body."""

    source_node: str | None
    source_file: str | None
    index: int
    e4e: str | None
    direction_set: str | None
    edits: tuple[tuple[str, float, str], ...]
    ganspace_mode: str
    size: int
    client_id: str


def _text(body: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise PreviewError(f"'{key}' must be a string of at most {MAX_NAME_CHARS} characters, got {value!r:.80}.")
    return value.strip() or None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PreviewError(f"{what} must be a finite number, got {value!r:.80}.")
    return float(value)


def _edits(raw: Any) -> tuple[tuple[str, float, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PreviewError("'edits' must be a list of {attribute, strength, rows} objects.")
    if len(raw) > MAX_EDITS:
        raise PreviewError(f"at most {MAX_EDITS} edits per preview, got {len(raw)}.")
    out = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PreviewError(f"edit {n} must be an object {{attribute, strength, rows}}, got {item!r:.80}.")
        name = _text(item, "attribute")
        if not name:
            continue  # an unused slot
        strength = _number(item.get("strength", 0.0), f"edit {n} ({name}) strength")
        if abs(strength) > MAX_ABS_STRENGTH:
            raise PreviewError(
                f"edit {n} ({name}) strength {strength:g} is outside -{MAX_ABS_STRENGTH:g}..{MAX_ABS_STRENGTH:g}, "
                "the range of the strength sliders."
            )
        out.append((name, strength, _text(item, "rows", "default") or "default"))
    return tuple(out)


def parse_request(body: Any) -> PreviewRequest:
    """Check a decoded JSON body; raises :class:`PreviewError` (400) naming the bad field."""
    if not isinstance(body, dict):
        raise PreviewError("the body must be a JSON object.")
    source = body.get("source")
    if not isinstance(source, dict):
        raise PreviewError('\'source\' must be an object: {"node": "<node id>"} and/or {"file": "<W+ file>"}.')
    node, file = _text(source, "node"), _text(source, "file")
    if node is None and file is None:
        raise PreviewError("'source' needs 'node' (an Invert Face / Load W+ node that ran) or 'file' (a W+ file).")
    index = body.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 4096:
        raise PreviewError(f"'index' must be an integer in 0..4095, got {index!r:.40}.")
    size = body.get("size", 256)
    if isinstance(size, bool) or not isinstance(size, int) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise PreviewError(f"'size' must be an integer in {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, got {size!r:.40}.")
    mode = _text(body, "ganspace_mode", "offset")
    if mode not in GANSPACE_MODES:
        raise PreviewError(f"'ganspace_mode' must be one of {list(GANSPACE_MODES)}, got {mode!r}.")
    return PreviewRequest(
        source_node=node,
        source_file=file,
        index=index,
        e4e=_text(body, "e4e"),
        direction_set=_text(body, "direction_set"),
        edits=_edits(body.get("edits")),
        ganspace_mode=mode,
        size=size,
        client_id=_text(body, "client_id") or "",
    )


class Models:
    """Models the previews need, loaded once and reloaded when their files change.

    Args:
        search_paths: ``() -> {folder key: [directories]}`` (ComfyUI's model folders).
        list_files: ``(folder key) -> [file names]`` as the loader combos list them.
        load_inverter: ``(path) -> E4EInverter`` (``models.inversion.e4e_model.load_e4e``).
    """

    def __init__(
        self,
        search_paths: Callable[[], Mapping[str, Sequence[Path]]],
        list_files: Callable[[str], list[str]],
        load_inverter: Callable[[Path], Any],
    ):
        self.search_paths, self.list_files, self.load_inverter = search_paths, list_files, load_inverter
        self._lock = threading.Lock()
        self.decode_lock = threading.Lock()
        self._inverter: tuple[tuple[str, int], Any] | None = None

    def catalog(self) -> DirectionCatalog:
        """Every direction set under ``likeness_directions`` (the shared cache, recomputed when files change)."""
        return cached_catalog(list(self.search_paths().get("likeness_directions", ())))

    def resolve(self, folder: str, name: str, what: str) -> Path:
        """A file the loader combos list (so never a path outside the model folders), as a full path."""
        if ".." in Path(name).parts or Path(name).is_absolute() or "\\" in name:
            raise PreviewError(f"{what} {name!r}: only names inside the '{folder}' model folder are allowed.")
        names = self.list_files(folder)
        if name not in names:
            raise PreviewError(
                f"{what} {name!r} is not a file in the '{folder}' model folder. Found: {names[:20] or 'none'}.",
                status=404,
            )
        for base in self.search_paths().get(folder, ()):
            path = Path(base) / name
            if path.is_file():
                return path
        raise PreviewError(f"{what} {name!r} disappeared from the '{folder}' folder; refresh.", status=404)

    def inverter(self, name: str | None):
        """The e4e inverter (decoder built on first use) for ``name`` or the first e4e file."""
        names = self.list_files("e4e")
        if not names:
            raise PreviewError("no e4e file: run Likeness Doctor (previews need e4e_ffhq_encode.pt).", status=404)
        path = self.resolve("e4e", name or names[0], "e4e file")
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if self._inverter is None or self._inverter[0] != key:
                self._inverter = None  # drop the old one before loading the next
                self._inverter = (key, self.load_inverter(path))
                logger.info("Likeness preview: loaded %s", path)
            return self._inverter[1]

    def source(self, req: PreviewRequest) -> torch.Tensor:
        """The W+ code [1,18,512] the request starts from."""
        wplus = _last_wplus(req.source_node) if req.source_node else None
        if wplus is None and req.source_file:
            from ..inversion.codes import load_wplus

            wplus = load_wplus(self.resolve("likeness_wplus", req.source_file, "W+ file"))
        if wplus is None:
            raise PreviewError(
                f"node {req.source_node} has no W+ output in this server session yet: queue the workflow once "
                "(the preview then starts from that node's last W+ code).",
                status=404,
            )
        if not 0 <= req.index < wplus.batch:
            raise PreviewError(f"'index' {req.index} is outside the W+ batch of {wplus.batch}.")
        if req.index in wplus.absent:
            raise PreviewError(f"item {req.index} of that W+ batch has no code (no face was found in its image).")
        return wplus.codes[req.index : req.index + 1]

    def direction_set(self, name: str | None) -> DirectionSet | None:
        if name is None:
            return None
        catalog = self.catalog()
        if name not in catalog.sets:
            raise PreviewError(
                f"direction set {name!r} was not found. Available: {', '.join(catalog.sets) or 'none'}.", status=404
            )
        return catalog.sets[name]


def directions_payload(catalog: DirectionCatalog) -> dict[str, Any]:
    """The JSON of ``GET /likeness/directions``: each set with its attributes, ranges, rows and licence."""
    sets = []
    for name, ds in catalog.sets.items():
        attributes = [
            {
                "name": d.name,
                "default_rows": rows_to_str(d.default_rows),
                "range": [float(d.recommended_range[0]), float(d.recommended_range[1])],
                "kind": d.kind,
                "licence": d.licence,
            }
            for d in ds.directions.values()
        ]
        sets.append({"name": name, "licence": ds.licence, "note": ds.note, "attributes": attributes})
    problems = [{"file": p.path.name, "reason": p.reason} for p in catalog.problems]
    return {"sets": sets, "problems": problems}


def _edit_list(ds: DirectionSet | None, edits: Sequence[tuple[str, float, str]]) -> list[Edit]:
    if edits and ds is None:
        raise PreviewError("edits need a 'direction_set' (the set chosen in Load Directions).")
    out = []
    for name, strength, rows in edits:
        if name not in ds:
            raise PreviewError(f"{name!r} is not in direction set {ds.name!r}; it has: {', '.join(ds.names())}.")
        out.append(Edit(ds[name], strength, None if rows == "default" else rows))
    return out


def render_png(models: Models, req: PreviewRequest) -> bytes:
    """Edit the source code and decode it: PNG bytes of a ``size`` x ``size`` RGB image."""
    code = models.source(req)
    edits = _edit_list(models.direction_set(req.direction_set), req.edits)
    try:
        code = edit(code, edits, ganspace_mode=req.ganspace_mode) if edits else code
        check_wplus(code, "live preview: the edited code", fix="Lower the strengths.")
    except (ValueError, LikenessError) as exc:  # bad rows text, a code pushed out of range and the like
        raise PreviewError(str(exc)) from exc
    inverter = models.inverter(req.e4e)
    if not inverter.has_decoder:
        raise PreviewError(
            f"{req.e4e or 'the e4e file'} has no StyleGAN2 decoder weights: previews need the full file."
        )
    with models.decode_lock, torch.inference_mode():  # one decode at a time; the decoder is shared
        img = inverter.decode(code.to(inverter.device), size=req.size, fast=True)
    pixels = ((img[0].float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
