"""Convert ComfyUI workflows between the API format and the UI/graph format.

ComfyUI-free: the node schemas come from a server's ``/object_info`` (a dict
``{class_type: entry}``), passed in by the caller. Formats (ComfyUI 0.33 with
frontend 1.49, "version 0.4" graphs):

* API prompt: ``{"<id>": {"class_type", "inputs": {name: value | ["<src id>", slot]}, "_meta": {"title"}}}``.
* UI graph: ``nodes`` with ``widgets_values`` **positional** in the schema's input order
  (a widget with ``control_after_generate`` is followed by ``"fixed"``, an
  ``image_upload`` combo by ``"image"``), ``inputs`` = the sockets plus the widget
  inputs that are linked, and ``links`` = ``[id, from, from_slot, to, to_slot, type]``.

Command line (from the repository root, with a ComfyUI server that has this pack)::

    python -m models.cli workflows --server http://127.0.0.1:8188

rewrites the templates ``example_workflows/<title>.json`` from ``example_workflows/api/<name>.json`` (titles in
``shipped.TITLES``) and the schema
snapshot ``tests/data/object_info_snapshot.json`` used by the unit tests (:func:`regenerate`).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError
from .shipped import FILE_LIST_INPUTS, WORKFLOW_DIR, model_metadata, ui_path

__all__ = [
    "FILE_LIST_INPUTS",
    "VIRTUAL_NODES",
    "WIDGET_TYPES",
    "InputSpec",
    "api_to_ui",
    "input_specs",
    "is_file_list",
    "snapshot_entries",
    "ui_to_api",
    "widget_layout",
    "expand_specs",
    "all_specs",
    "DYNAMIC_COMBO",
    "workflow_classes",
    "regenerate",
]

logger = logging.getLogger(__name__)

# Frontend-only nodes: never sent to the server, skipped by ui_to_api.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
_UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload")
UI_VERSION = 0.4


class InputSpec:
    """One input of a node schema.

    Attributes:
        name: input name.
        type: socket type ("IMAGE", "INT", ...); V1 list-combos report "COMBO".
        options: the schema's option dict (``min``/``max``/``options``/``tooltip``...).
        choices: combo choices (``None`` for other types).
        section: "required" or "optional".
        widget: True when the frontend shows it as a widget (not a socket).

    A dynamic combo (``COMFY_DYNAMICCOMBO_V3``) is a combo widget whose chosen option adds more
    inputs right after it, named ``<combo>.<input>`` in both formats (:meth:`children`).
    """

    __slots__ = ("name", "type", "options", "choices", "section", "widget")

    def __init__(self, name: str, spec: Sequence[Any], section: str):
        self.name, self.section = name, section
        raw_type = spec[0]
        self.options: dict[str, Any] = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        if isinstance(raw_type, list):
            self.type, self.choices = "COMBO", list(raw_type)
        else:
            self.type = str(raw_type)
            self.choices = list(self.options.get("options", [])) if self.type == "COMBO" else None
        if self.type == DYNAMIC_COMBO:
            self.choices = [option["key"] for option in self.options.get("options", [])]
        self.widget = (self.type in WIDGET_TYPES or self.type == DYNAMIC_COMBO) and not self.options.get("forceInput")

    @property
    def default(self) -> Any:
        """The value the frontend gives a new widget: the schema's default, else the first choice."""
        return self.options.get("default", self.choices[0] if self.choices else None)

    def children(self, key: Any) -> list[InputSpec]:
        """The inputs a dynamic combo shows for its option ``key`` (empty for other inputs)."""
        for option in self.options.get("options", []) if self.type == DYNAMIC_COMBO else []:
            if option["key"] == key:
                sections = option.get("inputs", {})
                return [
                    InputSpec(f"{self.name}.{name}", spec, section)
                    for section in ("required", "optional")
                    for name, spec in sections.get(section, {}).items()
                ]
        return []

    def extra_widget_values(self) -> list[Any]:
        """Frontend-only widget values that follow this input's value in ``widgets_values``."""
        extra: list[Any] = []
        if self.options.get("control_after_generate"):
            extra.append("fixed")
        if self.options.get("image_upload"):
            extra.append("image")  # the upload button's value, saved by the frontend
        return extra


def _entry(object_info: Mapping[str, Any], class_type: str, where: str) -> Mapping[str, Any]:
    entry = object_info.get(class_type)
    if entry is None:
        raise LikenessError(
            f"{where}: node class '{class_type}' is not in the server's /object_info. "
            "Install the pack that provides it (Likeness nodes start with 'Likeness_') and restart ComfyUI."
        )
    return entry


def input_specs(entry: Mapping[str, Any]) -> list[InputSpec]:
    """The visible inputs of an ``/object_info`` entry in the order the frontend builds them."""
    inputs = entry.get("input", {})
    order = entry.get("input_order") or {sec: list(inputs.get(sec, {})) for sec in ("required", "optional")}
    return [
        InputSpec(name, inputs[section][name], section)
        for section in ("required", "optional")
        for name in order.get(section, [])
        if name in inputs.get(section, {})
    ]


def expand_specs(specs: Sequence[InputSpec], pick: Any) -> list[InputSpec]:
    """``specs`` with each dynamic combo followed by the inputs of its chosen option (``pick(spec)``)."""
    out: list[InputSpec] = []
    for spec in specs:
        out.append(spec)
        if spec.type == DYNAMIC_COMBO:
            out.extend(expand_specs(spec.children(pick(spec)), pick))
    return out


def all_specs(entry: Mapping[str, Any]) -> list[InputSpec]:
    """Every input a node can show, including those of every dynamic combo option (first one wins)."""
    found: dict[str, InputSpec] = {}
    pending = list(input_specs(entry))
    while pending:
        spec = pending.pop(0)
        found.setdefault(spec.name, spec)
        for key in (spec.choices or []) if spec.type == DYNAMIC_COMBO else []:
            pending.extend(spec.children(key))
    return list(found.values())


def widget_layout(entry: Mapping[str, Any], values: Sequence[Any] | None = None) -> list[tuple[str | None, int]]:
    """Positional meaning of ``widgets_values``: (input name or None for a frontend-only value, index).

    A dynamic combo's children follow it; which ones depends on its value, read from ``values``
    (the node's ``widgets_values``) when given, else its default.
    """
    layout: list[tuple[str | None, int]] = []

    def walk(specs: Sequence[InputSpec]) -> None:
        for spec in specs:
            if not spec.widget:
                continue
            at = len(layout)
            layout.append((spec.name, at))
            layout.extend((None, len(layout) + i) for i in range(len(spec.extra_widget_values())))
            if spec.type == DYNAMIC_COMBO:
                walk(spec.children(values[at] if values is not None and at < len(values) else spec.default))

    walk(input_specs(entry))
    return layout


def is_file_list(class_type: str, spec: InputSpec) -> bool:
    """True for combos whose choices are files on the user's machine (models, input images)."""
    return spec.type == "COMBO" and (
        (class_type, spec.name) in FILE_LIST_INPUTS or any(spec.options.get(k) for k in _UPLOAD_KEYS)
    )


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def workflow_classes(api: Mapping[str, Any]) -> set[str]:
    """Every ``class_type`` of an API prompt."""
    return {node["class_type"] for node in api.values()}


def api_to_ui(
    api: Mapping[str, Mapping[str, Any]],
    object_info: Mapping[str, Any],
    notes: str | Sequence[str] | None = None,
    *,
    name: str = "workflow",
    groups: Mapping[str, Sequence[str]] | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the UI/graph workflow of an API prompt.

    Args:
        api: API prompt; node ids must be decimal strings (they become the UI node ids).
        object_info: ``/object_info`` entries (at least the classes used).
        notes: text of a Note node per string, placed left of the graph.
        name: workflow name; seeds the graph's deterministic uuid.
        groups: group title -> node ids (API ids); default: by role (see ``workflow_layout``).
        versions: ``{"comfy-core": "0.33.0", "<pack cnr_id>": "x.y.z"}`` written to node properties.

    Returns:
        The UI workflow dict (json-serialisable), laid out left to right in execution order.
    """
    from .layout import default_groups, layout

    versions = dict(versions or {})
    specs: dict[str, list[InputSpec]] = {}
    for nid, node in api.items():
        if not nid.isdigit():
            raise LikenessError(f"API node id '{nid}' is not a number; the UI format needs integer ids.")
        top = input_specs(_entry(object_info, node["class_type"], f"node {nid}"))
        specs[nid] = expand_specs(top, lambda spec, node=node: node["inputs"].get(spec.name, spec.default))

    ui_nodes: dict[str, dict[str, Any]] = {}
    links: list[list[Any]] = []
    for nid in sorted(api, key=int):
        node = api[nid]
        cls = node["class_type"]
        entry = object_info[cls]
        known = {s.name for s in specs[nid]}
        unknown = sorted(set(node["inputs"]) - known)
        if unknown:
            raise LikenessError(f"node {nid} ({cls}): inputs {unknown} are not in its schema (has {sorted(known)}).")
        widgets_values: list[Any] = []
        inputs: list[dict[str, Any]] = []
        linked_widgets: list[dict[str, Any]] = []
        for spec in specs[nid]:
            value = node["inputs"].get(spec.name)
            if spec.widget:
                if _is_link(value):
                    linked_widgets.append(
                        {"name": spec.name, "type": spec.type, "widget": {"name": spec.name}, "link": value}
                    )
                    value = spec.default
                elif spec.name not in node["inputs"]:
                    value = spec.default
                widgets_values.append(value)
                widgets_values.extend(spec.extra_widget_values())
            else:
                inputs.append({"name": spec.name, "type": spec.type, "link": value if _is_link(value) else None})
        inputs.extend(linked_widgets)
        display = entry.get("display_name") or cls
        title = node.get("_meta", {}).get("title")
        pack = (
            "comfy-core"
            if not str(entry.get("python_module", "")).startswith("custom_nodes")
            else versions.get("pack_id", "")
        )
        props: dict[str, Any] = {"Node name for S&R": cls}
        if pack:
            props["cnr_id"] = pack
            if versions.get(pack):
                props["ver"] = versions[pack]
        models = model_metadata(cls, node["inputs"])
        if models:  # the frontend's "Missing Models" dialog offers these downloads
            props["models"] = models
        ui: dict[str, Any] = {
            "id": int(nid),
            "type": cls,
            "pos": [0, 0],
            "size": [300, 100],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": inputs,
            "outputs": [
                {"name": oname, "type": otype, "links": None}
                for oname, otype in zip(
                    entry.get("output_name", entry.get("output", [])), entry.get("output", []), strict=True
                )
            ],
        }
        if title and title != display:
            ui["title"] = title
        ui["properties"] = props
        ui["widgets_values"] = widgets_values
        ui_nodes[nid] = ui

    # links: numbered in (target id, target slot) order so regeneration is stable
    for nid in sorted(ui_nodes, key=int):
        for slot, inp in enumerate(ui_nodes[nid]["inputs"]):
            src = inp["link"]
            if src is None:
                continue
            src_id, src_slot = src
            if src_id not in ui_nodes:
                raise LikenessError(
                    f"node {nid} ({api[nid]['class_type']}) input '{inp['name']}' links to missing node {src_id}."
                )
            outputs = ui_nodes[src_id]["outputs"]
            if not 0 <= src_slot < len(outputs):
                raise LikenessError(
                    f"node {nid} input '{inp['name']}' links to output {src_slot} of node {src_id} "
                    f"({api[src_id]['class_type']}), which has {len(outputs)} outputs."
                )
            link_id = len(links) + 1
            links.append([link_id, int(src_id), src_slot, int(nid), slot, outputs[src_slot]["type"]])
            inp["link"] = link_id
            outputs[src_slot]["links"] = (outputs[src_slot]["links"] or []) + [link_id]

    note_texts = [notes] if isinstance(notes, str) else list(notes or [])
    placed = layout(api, ui_nodes, specs, groups if groups is not None else default_groups(api), note_texts)
    nodes = placed["nodes"]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-likeness/workflows/{name}")),
        "revision": 0,
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": placed["groups"],
        "config": {},
        "extra": {"ds": placed["ds"]},
        "version": UI_VERSION,
    }


def ui_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The API prompt of a UI workflow (what the frontend's ``graphToPrompt`` sends).

    Note nodes and muted nodes (mode 2) are dropped; bypassed nodes (mode 4), subgraphs,
    Reroute and Primitive nodes are refused with a :class:`LikenessError`.
    """
    if ui.get("definitions", {}).get("subgraphs"):
        raise LikenessError("workflow has subgraphs; convert them to nodes (right-click > Unpack subgraph) first.")
    links = {lk[0]: lk for lk in ui.get("links", [])}
    nodes = {n["id"]: n for n in ui.get("nodes", [])}
    api: dict[str, dict[str, Any]] = {}
    for node in sorted(nodes.values(), key=lambda n: n["id"]):
        cls, nid = node["type"], node["id"]
        if cls in VIRTUAL_NODES or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise LikenessError(f"node {nid} ({cls}) is bypassed; un-bypass or delete it before converting.")
        entry = _entry(object_info, cls, f"node {nid}")
        values = list(node.get("widgets_values") or [])
        layout = widget_layout(entry, values)
        if len(values) < len(layout):
            raise LikenessError(
                f"node {nid} ({cls}) has {len(values)} widget values, its schema needs {len(layout)} "
                f"({[n for n, _ in layout if n]}). The node's schema changed: re-create it in the editor."
            )
        inputs: dict[str, Any] = {name: values[i] for name, i in layout if name is not None}
        for inp in node.get("inputs", []):
            link_id = inp.get("link")
            if link_id is None:
                continue
            if link_id not in links:
                raise LikenessError(
                    f"node {nid} ({cls}) input '{inp['name']}' names link {link_id}, which does not exist."
                )
            _, src, src_slot, *_ = links[link_id]
            src_node = nodes.get(src)
            if src_node is None:
                raise LikenessError(f"link {link_id} into node {nid} ({cls}) comes from missing node {src}.")
            if src_node["type"] in VIRTUAL_NODES or src_node.get("mode", 0) in (2, 4):
                raise LikenessError(f"node {nid} ({cls}) input '{inp['name']}' comes from muted/virtual node {src}.")
            inputs[inp["name"]] = [str(src), src_slot]
        title = node.get("title") or entry.get("display_name") or cls
        api[str(nid)] = {"class_type": cls, "inputs": inputs, "_meta": {"title": title}}
    return api


def snapshot_entries(object_info: Mapping[str, Any], classes: Iterable[str]) -> dict[str, Any]:
    """The ``/object_info`` entries of ``classes``, with file-list combo choices emptied.

    File lists (checkpoints, input images, ...) depend on the machine, so the snapshot
    keeps their schema but not their choices; everything else is kept verbatim.
    """
    out: dict[str, Any] = {}
    for cls in sorted(classes):
        entry = copy.deepcopy(dict(_entry(object_info, cls, "snapshot")))
        for section in ("required", "optional"):
            for name, spec in entry.get("input", {}).get(section, {}).items():
                ispec = InputSpec(name, spec, section)
                if not is_file_list(cls, ispec):
                    continue
                if isinstance(spec[0], list):
                    spec[0] = []
                else:
                    spec[1]["options"] = []
        out[cls] = entry
    return out


def regenerate(server: str, root: Path) -> int:
    """Rewrite the UI workflows and the schema snapshot from the API workflows and a live server."""
    from ..batch.client import ComfyClient
    from .notes import model_note

    root = Path(root)
    client = ComfyClient(server, timeout=60)
    object_info = client.object_info()
    stats = client.get("/system_stats")
    pack = _pack_meta(root)
    versions = {"comfy-core": stats["system"]["comfyui_version"], "pack_id": pack[0], pack[0]: pack[1]}
    classes: set[str] = set()
    api_files = sorted((root / WORKFLOW_DIR / "api").glob("*.json"))
    if not api_files:
        raise LikenessError(f"no API workflows in {root / WORKFLOW_DIR / 'api'}")
    for path in api_files:
        api = json.loads(path.read_text())
        classes |= workflow_classes(api)
        ui = api_to_ui(api, object_info, notes=[model_note(api)], name=path.stem, versions=versions)
        back = ui_to_api(ui, object_info)
        if back != api:
            raise LikenessError(f"{path.name}: the UI conversion does not round-trip; not written.")
        target = ui_path(root, path.stem)
        target.write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.write(f"wrote {target}\n")
    snap = root / "tests" / "data" / "object_info_snapshot.json"
    snap.parent.mkdir(parents=True, exist_ok=True)
    # the server's key order is kept: a dynamic combo's options carry no input_order, their order is the widgets'
    snap.write_text(json.dumps(snapshot_entries(object_info, classes), indent=1, ensure_ascii=False) + "\n")
    sys.stdout.write(f"wrote {snap} ({len(classes)} node classes)\n")
    return 0


def _pack_meta(root: Path) -> tuple[str, str]:
    """(registry id, version) from ``pyproject.toml``."""
    import re

    text = (root / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[-1].split("\n[", 1)[0]
    found = {k: re.search(rf'^{k}\s*=\s*"([^"]+)"', project, re.M) for k in ("name", "version")}
    if not all(found.values()):
        raise LikenessError(f"{root / 'pyproject.toml'}: [project] name/version not found")
    return found["name"].group(1), found["version"].group(1)
