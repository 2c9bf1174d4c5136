"""Sweep specs for the batch queue: an API workflow + a spec -> one fully substituted prompt per point.

A spec (JSON object; ``load_spec`` reads it from a file) has these optional keys::

    {
      "faces":     {"folder": "faces/", "node": "Load face", "input": "image", "subfolder": "likeness_batch"},
      "sweep":     [{"node": "Likeness edit", "input": "strength_1", "values": [-2, 0, 2], "name": "age"}],
      "seeds":     {"node": "KSampler", "input": "seed", "values": [1, 2]},
      "overrides": [{"node": "KSampler", "input": "steps", "value": 4}]
    }

* ``node`` addresses a node of the API workflow by id (``"3"``), by ``_meta.title`` or, when no title
  matches, by ``class_type``; it must match exactly one node. ``input`` must already exist in that node's
  ``inputs`` (API exports list every widget and link).
* ``faces``: every image in ``folder`` (``.png .jpg .jpeg .webp .bmp``, sorted by name; relative to the
  spec file) becomes one value of the LoadImage input. The batch runner uploads the file to each server
  (``POST /upload/image``) into ``subfolder`` under the name ``<stem>_<sha256[:8]><ext>``, so the input
  value ``"subfolder/<stem>_<hash><ext>"`` is known before the upload.
* ``sweep`` entries are combined as a cartesian product, in this order: faces (outermost), sweep entries
  in spec order, seeds (innermost). ``name`` labels an entry (default: its input name). ``seeds`` may also
  be a list of such objects.
* ``overrides`` are applied to every point before the sweep values.
* Limits: a spec expands to at most ``MAX_POINTS`` (10,000) points; ``faces.subfolder`` must be a folder
  inside the server's input folder (no ``..``, no drive); error messages list at most 20 items.

Each :class:`SweepPoint` carries a human label (``face=alice_age=+2_seed=1``: numbers of sweep entries with
an explicit sign, seeds and other values as written) and a stable ``point_id``: a hash of the substituted
prompt, so the same point keeps its id when values are added to or removed from the spec.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = [
    "SpecError",
    "FaceInput",
    "SweepPoint",
    "load_json",
    "load_spec",
    "check_api_workflow",
    "find_node",
    "expand_spec",
    "IMAGE_SUFFIXES",
    "MAX_POINTS",
    "listed",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_POINTS = 10_000  # one spec expands to at most this many prompts (split bigger sweeps)
MAX_LISTED = 20  # error messages list at most this many items
_SPEC_KEYS = {"faces", "sweep", "seeds", "overrides"}


class SpecError(LikenessError, ValueError):
    """A workflow or sweep spec that cannot be expanded (unknown node or input, bad value list)."""


@dataclass(frozen=True)
class FaceInput:
    """A local face image bound to a LoadImage input; uploaded per server before the point is queued."""

    node_id: str
    input: str
    path: Path
    subfolder: str
    upload_name: str  # "<stem>_<sha256[:8]><ext>"

    @property
    def value(self) -> str:
        """The input value the prompt carries: ``subfolder/upload_name``."""
        return f"{self.subfolder}/{self.upload_name}" if self.subfolder else self.upload_name


@dataclass
class SweepPoint:
    """One prompt of a batch.

    Attributes:
        index: position in the deterministic expansion order (0-based).
        point_id: stable id (sha256 of the substituted prompt, 16 hex digits).
        label: human label, e.g. ``face=alice_age=+2_seed=1``.
        prompt: the fully substituted API prompt (a deep copy; safe to mutate).
        inputs: ``{"<node id>.<input>": value}`` for every substituted input (faces as their input value).
        face: the face to upload before queueing, or None.
    """

    index: int
    point_id: str
    label: str
    prompt: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    face: FaceInput | None = None


def load_json(source: dict[str, Any] | str | Path, what: str) -> tuple[dict[str, Any], Path | None]:
    """A dict as is, or a JSON file read into a dict; returns (data, the file's folder or None)."""
    if isinstance(source, dict):
        return source, None
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"{what} file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{what} file {path} must hold a JSON object, found {type(data).__name__}")
    return data, path.parent


def load_spec(source: dict[str, Any] | str | Path) -> tuple[dict[str, Any], Path | None]:
    """Read a sweep spec (dict or JSON file) and check its top-level keys."""
    spec, base = load_json(source, "sweep spec")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise SpecError(f"unknown sweep spec keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    return spec, base


def check_api_workflow(workflow: dict[str, Any]) -> None:
    """Raise :class:`SpecError` unless ``workflow`` is an API-format prompt (``{id: {class_type, inputs}}``)."""
    if "nodes" in workflow and "links" in workflow:
        raise SpecError(
            "this is a UI (graph) workflow; the batch queue needs the API format: in ComfyUI use "
            "Workflow > Export (API) and pass that file"
        )
    bad = [k for k, v in workflow.items() if not (isinstance(v, dict) and "class_type" in v and "inputs" in v)]
    if bad or not workflow:
        raise SpecError(
            f"not an API-format workflow: entries {bad[:5]} lack class_type/inputs "
            '(expected {"<node id>": {"class_type": ..., "inputs": {...}}})'
        )


def listed(items: Any, limit: int = MAX_LISTED) -> str:
    """``a, b, c`` for an error message: at most ``limit`` items, then ``... and N more``."""
    items = [str(x) for x in items]
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _describe(workflow: dict[str, Any]) -> str:
    return listed(
        f"{nid} ({node.get('_meta', {}).get('title', node['class_type'])!r}, {node['class_type']})"
        for nid, node in workflow.items()
    )


def find_node(workflow: dict[str, Any], ref: str | int) -> str:
    """The id of the node ``ref`` names: a node id, else a unique ``_meta.title``, else a unique class_type."""
    ref_s = str(ref)
    if ref_s in workflow:
        return ref_s
    for key, what in ((lambda n: n.get("_meta", {}).get("title"), "title"), (lambda n: n["class_type"], "class_type")):
        hits = [nid for nid, node in workflow.items() if key(node) == ref_s]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SpecError(
                f"node {ref_s!r} is ambiguous: {len(hits)} nodes have that {what} (ids {listed(hits)}); "
                "address it by node id instead"
            )
    raise SpecError(f"no node {ref_s!r} (by id, title or class) in the workflow; nodes: {_describe(workflow)}")


def _resolve(workflow: dict[str, Any], entry: dict[str, Any], where: str) -> tuple[str, str]:
    if not isinstance(entry, dict) or "node" not in entry or "input" not in entry:
        raise SpecError(f'{where} needs "node" and "input", got {entry!r}')
    node_id = find_node(workflow, entry["node"])
    name = entry["input"]
    inputs = workflow[node_id]["inputs"]
    if name not in inputs:
        raise SpecError(
            f"{where}: node {node_id} ({workflow[node_id]['class_type']}) has no input {name!r}; "
            f"its inputs: {listed(sorted(inputs))}"
        )
    return node_id, name


def _values(entry: dict[str, Any], where: str) -> list[Any]:
    values = entry.get("values")
    if not isinstance(values, list) or not values:
        raise SpecError(f'{where} needs a non-empty "values" list, got {values!r}')
    seen: dict[str, int] = {}
    for v in values:
        key = json.dumps(v, sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
    dupes = sorted(k for k, n in seen.items() if n > 1)
    if dupes:
        raise SpecError(f"{where} repeats values {listed(dupes)}; each point must differ")
    return values


def _label_value(value: Any, signed: bool) -> str:
    """A label fragment: numbers as ``+2``/``-0.5`` (signed) or ``7``, anything else with [^A-Za-z0-9.+-] -> '-'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:+g}" if signed else (f"{value:g}" if isinstance(value, float) else str(value))
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.+\-]+", "-", text).strip("-") or "x"


def _label_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+\-]+", "-", name).strip("-") or "x"


def _faces(workflow: dict[str, Any], faces: dict[str, Any], base: Path | None) -> list[FaceInput]:
    node_id, name = _resolve(workflow, faces, "faces")
    if "folder" not in faces:
        raise SpecError(f'faces needs a "folder" of images, got {faces!r}')
    folder = Path(faces["folder"])
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    if not folder.is_dir():
        raise SpecError(f"faces folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SpecError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in faces folder {folder}")
    subfolder = str(faces.get("subfolder", "likeness_batch")).replace("\\", "/").strip("/")
    if any(part in ("..", ".") for part in subfolder.split("/")) or ":" in subfolder or "\x00" in subfolder:
        raise SpecError(
            f"faces.subfolder {faces.get('subfolder')!r} must be a folder inside the server's input folder, "
            'e.g. "likeness_batch" (no "..", no drive)'
        )
    out = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        out.append(FaceInput(node_id, name, path, subfolder, f"{path.stem}_{digest}{path.suffix.lower()}"))
    return out


def _point_id(prompt: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def expand_spec(workflow: dict[str, Any], spec: dict[str, Any], base_dir: str | Path | None = None) -> list[SweepPoint]:
    """Expand ``spec`` over ``workflow`` into the cartesian product of its sweep points.

    Args:
        workflow: API-format prompt (not modified).
        spec: sweep spec (see the module docstring).
        base_dir: folder that a relative ``faces.folder`` is relative to (the spec file's folder).

    Returns:
        The points in deterministic order: faces outermost, sweep entries in spec order, seeds innermost.
    """
    check_api_workflow(workflow)
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise SpecError(f"unknown sweep spec keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    base = copy.deepcopy(workflow)
    for i, override in enumerate(spec.get("overrides", [])):
        node_id, name = _resolve(base, override, f"overrides[{i}]")
        if "value" not in override:
            raise SpecError(f'overrides[{i}] needs a "value", got {override!r}')
        base[node_id]["inputs"][name] = override["value"]

    # axes: (label name, node id, input, values, signed label numbers)
    axes: list[tuple[str, str, str, list[Any], bool]] = []
    sweep = spec.get("sweep", [])
    if not isinstance(sweep, list):
        raise SpecError(f'"sweep" must be a list of {{node, input, values}} objects, got {sweep!r}')
    for i, entry in enumerate(sweep):
        node_id, name = _resolve(base, entry, f"sweep[{i}]")
        axes.append((str(entry.get("name", name)), node_id, name, _values(entry, f"sweep[{i}]"), True))
    seeds = spec.get("seeds")
    for i, entry in enumerate([] if seeds is None else seeds if isinstance(seeds, list) else [seeds]):
        node_id, name = _resolve(base, entry, f"seeds[{i}]")
        axes.append((str(entry.get("name", "seed")), node_id, name, _values(entry, f"seeds[{i}]"), False))
    targets = [(a[1], a[2]) for a in axes]
    faces = _faces(base, spec["faces"], Path(base_dir) if base_dir else None) if spec.get("faces") else [None]
    if faces[0] is not None:
        targets.append((faces[0].node_id, faces[0].input))
    repeated = sorted({f"{n}.{i}" for n, i in targets if targets.count((n, i)) > 1})
    if repeated:
        raise SpecError(f"inputs {listed(repeated)} are swept more than once; sweep each input in one entry")
    count = len(faces) * math.prod(len(axis[3]) for axis in axes)
    if count > MAX_POINTS:
        sizes = " x ".join([f"{len(faces)} faces"] * (faces[0] is not None) + [f"{len(a[3])} {a[0]}" for a in axes])
        raise SpecError(
            f"the spec expands to {count} points ({sizes}); one batch takes at most {MAX_POINTS}: "
            "split it into several specs, each with its own --out folder"
        )

    points: list[SweepPoint] = []
    for face in faces:
        for combo in itertools.product(*(axis[3] for axis in axes)):
            prompt = copy.deepcopy(base)
            inputs: dict[str, Any] = {}
            parts: list[str] = []
            if face is not None:
                prompt[face.node_id]["inputs"][face.input] = face.value
                inputs[f"{face.node_id}.{face.input}"] = face.value
                parts.append(f"face={_label_value(face.path.stem, False)}")
            for (label, node_id, name, _, signed), value in zip(axes, combo, strict=True):
                prompt[node_id]["inputs"][name] = copy.deepcopy(value)
                inputs[f"{node_id}.{name}"] = value
                parts.append(f"{_label_name(label)}={_label_value(value, signed)}")
            points.append(SweepPoint(len(points), _point_id(prompt), "_".join(parts) or "point", prompt, inputs, face))
    logger.info(
        "batch spec: %d points (%d faces x %s)",
        len(points),
        len(faces) if faces[0] else 0,
        " x ".join(f"{a[0]}:{len(a[3])}" for a in axes) or "no sweep",
    )
    return points
