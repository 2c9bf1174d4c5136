"""Readable layout and the model Note for UI workflows built by ``workflow_format.api_to_ui``.

ComfyUI-free. Nodes go into lanes (groups stacked top to bottom) and columns
(left to right in data-flow order); sizes are estimated from the schema so that
every widget is visible when the frontend opens the file. Units: graph pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GROUPS", "default_groups", "layout"]

# (group title, colour, lane) in display order; groups of one lane sit side by side.
GROUPS: tuple[tuple[str, str, int], ...] = (
    ("1 - Face photo to W+ code", "#3f789e", 0),
    ("2 - Edit the W+ code", "#a1309b", 0),
    ("3 - Generate with the W+ adapter (SD1.5)", "#b06634", 1),
)
# Group index of a node class; columns follow the data flow.
GROUP_OF_CLASS: dict[str, int] = {
    "LoadImage": 0,
    "Likeness_LoadE4E": 0,
    "Likeness_FaceAnalyzer": 0,
    "Likeness_DetectFaces": 0,
    "Likeness_InvertFace": 0,
    "Likeness_LoadWPlus": 0,
    "Likeness_LoadDirections": 1,
    "Likeness_EditAttributes": 1,
    "Likeness_AttributeSweep": 1,
    "Likeness_MixIdentities": 1,
    "Likeness_PreviewWPlus": 1,
    "CheckpointLoaderSimple": 2,
    "CLIPTextEncode": 2,
    "EmptyLatentImage": 2,
    "Likeness_LoadWPlusAdapter": 2,
    "Likeness_ApplyWPlusAdapter": 2,
    "KSampler": 2,
    "VAEDecode": 2,
    "SaveImage": 2,
    "PreviewImage": 2,
}
WIDTH: dict[str, int] = {"CLIPTextEncode": 400, "SaveImage": 420, "VAEDecode": 240, "Likeness_EditAttributes": 340}
EXTRA_HEIGHT: dict[str, int] = {"LoadImage": 250, "SaveImage": 300, "PreviewImage": 300}
TITLE_H, SLOT_H, WIDGET_H, GAP, GROUP_PAD, GROUP_HEAD = 30, 22, 24, 30, 15, 45
NOTE_WIDTH = 480


def default_groups(api: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Group title -> API node ids, by node class (unknown classes join the last group)."""
    out: dict[str, list[str]] = {}
    for nid in sorted(api, key=int):
        g = GROUP_OF_CLASS.get(api[nid]["class_type"], len(GROUPS) - 1)
        out.setdefault(GROUPS[g][0], []).append(nid)
    return out


def _node_size(ui: Mapping[str, Any], specs: Sequence[Any]) -> list[int]:
    cls = ui["type"]
    sockets = sum(1 for inp in ui["inputs"] if "widget" not in inp)
    widgets = [s for s in specs if s.widget]
    h = max(sockets, len(ui["outputs"])) * SLOT_H + len(widgets) * WIDGET_H + 16
    h += sum(70 for s in widgets if s.type == "STRING" and s.options.get("multiline"))
    h += sum(WIDGET_H for s in widgets if s.options.get("control_after_generate"))
    h += EXTRA_HEIGHT.get(cls, 0)
    return [WIDTH.get(cls, 320), h]


def _topo_order(ui_nodes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    deps = {nid: {str(inp["source"]) for inp in n.get("_sources", [])} for nid, n in ui_nodes.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = sorted((n for n in deps if n not in done and deps[n] <= done), key=int)
        if not ready:  # a cycle: ComfyUI refuses it anyway; keep id order
            ready = sorted((n for n in deps if n not in done), key=int)[:1]
        order.append(ready[0])
        done.add(ready[0])
    return order


def _columns(
    api: Mapping[str, Mapping[str, Any]],
    sources: Mapping[str, list[str]],
    group_of: Mapping[str, str],
    titles: Sequence[str],
    lane_of: Mapping[str, int],
) -> dict[str, int]:
    """Column of every node: after its sources, groups of one lane side by side, sources pulled right."""
    order = _topo_order({n: {"_sources": [{"source": s} for s in sources[n]]} for n in api})
    col = {n: 0 for n in order}

    def push() -> None:
        for n in order:
            col[n] = max([col[n], *(col[s] + 1 for s in sources[n])])

    push()
    for gi, title in enumerate(titles):
        before = [n for n in order if group_of[n] in titles[:gi] and lane_of[group_of[n]] == lane_of[title]]
        floor = max((col[n] for n in before), default=-1) + 1
        for n in order:
            if group_of[n] == title:
                col[n] = max(col[n], floor)
        push()
    cap = {t: max(col[n] for n in order if group_of[n] == t) for t in titles if any(group_of[n] == t for n in order)}
    consumers = {n: [m for m in order if n in sources[m]] for n in order}
    for n in reversed(order):
        if consumers[n]:
            col[n] = max(col[n], min(cap[group_of[n]], min(col[m] for m in consumers[n]) - 1))
    return col


def layout(
    api: Mapping[str, Mapping[str, Any]],
    ui_nodes: Mapping[str, dict[str, Any]],
    specs: Mapping[str, Sequence[Any]],
    groups: Mapping[str, Sequence[str]],
    notes: Sequence[str],
) -> dict[str, Any]:
    """Set ``pos``/``size``/``order`` of ``ui_nodes`` (in place); add Note nodes; build groups.

    Returns ``{"nodes": [...], "groups": [...], "ds": {...}}`` with nodes in execution order.
    """
    sources = {
        nid: sorted({v[0] for v in api[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2}, key=int)
        for nid in api
    }
    for nid, node in ui_nodes.items():
        node["size"] = _node_size(node, specs[nid])
        node["_sources"] = [{"source": s} for s in sources[nid]]
    rank = {t: i for i, (t, _, _) in enumerate(GROUPS)}
    titles = sorted(groups, key=lambda t: rank.get(t, len(rank)))
    group_of = {nid: title for title in titles for nid in groups[title]}
    for nid in api:
        group_of.setdefault(nid, titles[-1])
    lane_of = {t: next((lane for gt, _, lane in GROUPS if gt == t), 1) for t in titles}
    col = _columns(api, sources, group_of, titles, lane_of)
    ncols = max(col.values()) + 1
    widths = [max((ui_nodes[n]["size"][0] for n in col if col[n] == c), default=0) for c in range(ncols + 1)]
    xs = [GAP + sum(widths[:c]) + c * (GAP + 2 * GROUP_PAD) for c in range(ncols + 1)]
    lanes = sorted(set(lane_of.values()))
    y0 = GROUP_HEAD + TITLE_H
    lane_top: dict[int, int] = {}
    for lane in lanes:
        lane_top[lane] = y0
        bottom = y0
        for c in range(ncols):
            y = y0
            for nid in sorted((n for n in col if col[n] == c and lane_of[group_of[n]] == lane), key=int):
                ui_nodes[nid]["pos"] = [xs[c], y]
                y += ui_nodes[nid]["size"][1] + TITLE_H + GAP
            bottom = max(bottom, y)
        y0 = bottom + GROUP_PAD + GAP + GROUP_HEAD + TITLE_H
    out_groups = []
    for title in titles:
        members = [ui_nodes[n] for n in groups[title]]
        if not members:
            continue
        x_min = min(n["pos"][0] for n in members) - GROUP_PAD
        y_min = min(n["pos"][1] for n in members) - TITLE_H - GROUP_HEAD
        x_max = max(n["pos"][0] + n["size"][0] for n in members) + GROUP_PAD
        y_max = max(n["pos"][1] + n["size"][1] for n in members) + GROUP_PAD
        colour = next((c for gt, c, _ in GROUPS if gt == title), "#3f789e")
        out_groups.append(
            {
                "id": len(out_groups) + 1,
                "title": title,
                "bounding": [x_min, y_min, x_max - x_min, y_max - y_min],
                "color": colour,
                "font_size": 24,
                "flags": {},
            }
        )
    # notes: top right, in the columns the first lane leaves free (else right of everything)
    right = max(n["pos"][0] + n["size"][0] for n in ui_nodes.values())
    first = [n for n in col if lane_of[group_of[n]] == lanes[0]]
    note_col = max(col[n] for n in first) + 1 if len(lanes) > 1 else ncols
    note_x = xs[note_col] + GROUP_PAD
    note_w = max(NOTE_WIDTH, right - note_x)
    nodes: list[dict[str, Any]] = []
    next_id = max(int(n) for n in ui_nodes) + 1
    note_y = lane_top[lanes[0]]
    per_line = max(40, int(note_w / 7.2))
    for i, text in enumerate(notes):
        lines = sum(1 + len(line) // per_line for line in text.splitlines())
        h = max(160, 17 * lines + 30)
        nodes.append(
            {
                "id": next_id + i,
                "type": "Note",
                "pos": [note_x, note_y],
                "size": [note_w, h],
                "flags": {},
                "order": i,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "title": "Read me: models and licences",
                "properties": {},
                "widgets_values": [text],
                "color": "#432",
                "bgcolor": "#653",
            }
        )
        note_y += h + TITLE_H + GAP
    for k, nid in enumerate(_topo_order(ui_nodes)):
        node = ui_nodes[nid]
        node.pop("_sources")
        node["order"] = len(notes) + k
        nodes.append(node)
    right = max(n["pos"][0] + n["size"][0] for n in nodes)
    low = max(
        max(n["pos"][1] + n["size"][1] for n in nodes),
        max((g["bounding"][1] + g["bounding"][3] for g in out_groups), default=0),
    )
    scale = round(min(1400 / (right + GAP), 900 / (low + GAP), 1.0), 3)
    return {"nodes": nodes, "groups": out_groups, "ds": {"scale": scale, "offset": [0, 0]}}
