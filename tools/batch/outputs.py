"""Output files of batch points: safe local names, and a per-point marker in the server's file names.

**Local names.** A file the server reports (``{"filename", "subfolder", "type"}`` in a history output) is
saved in the batch's output folder as ``<index:04d>_<label>_n<node>_<i><ext>`` (``..._<kind><i><ext>``
for records other than ``images``). The server's ``filename`` must be a plain base name: one with a path
component (``../../x``, ``sub/dir``, a backslash, NUL) is a server error (:class:`UnsafeOutputName`) and
nothing is fetched or written for it; only its extension, if it is 1-10 letters or digits, is kept.

**Markers.** ComfyUI's history lives in memory: a server killed right after a prompt finished forgets
it. Its saved files stay on disk, so the batch client makes them findable: before posting a point it
appends ``_lk<first 12 hex digits of the prompt id>`` to every string ``filename_prefix`` input of the
prompt (``likeness/portrait`` -> ``likeness/portrait_lk3f2a9c01b7de``). A fresh prefix makes ComfyUI's
counter start at 1, so the first file each saver writes has a predictable name
(``likeness/portrait_lk3f2a9c01b7de_00001_.png``), which ``GET /view`` can look up after a restart.
The name is predictable for the savers in :data:`SAVERS` and, once one point of the batch has finished
normally, for any node that reported a file whose name starts with its tagged prefix. A prefix with
``%`` variables (dates, sizes) is not predictable.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = [
    "UnsafeOutputName",
    "OutputMarker",
    "SAVERS",
    "check_server_filename",
    "local_name",
    "marker_tag",
    "tag_prompt",
    "learn_saved_files",
    "find_marked_files",
    "SeenFiles",
    "file_is_complete",
    "counter_names",
]

# class_type -> (fixed subfolder or None for the prefix's own, first file after the base, history key or None)
SAVERS: dict[str, tuple[str | None, str, str | None]] = {
    "SaveImage": (None, "_00001_.png", "images"),
    "SaveAnimatedPNG": (None, "_00001_.png", "images"),
    "SaveAnimatedWEBP": (None, "_00001_.webp", "images"),
    "Likeness_SaveWPlus": ("likeness_wplus", "_00001.safetensors", None),
}
MAX_NODES = 20  # messages name at most this many nodes
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


@dataclass(frozen=True)
class SeenFiles:
    """What a normally finished point showed about one saving node: its folder, first name and file count."""

    subfolder: str
    suffix: str
    count: int


class UnsafeOutputName(LikenessError):
    """The server reported an output file name with a path component (a server error)."""


@dataclass(frozen=True)
class OutputMarker:
    """Where one file-saving node of a tagged prompt writes its first file on the server.

    Attributes:
        node_id: the node in the prompt.
        class_type: its class.
        subfolder: the folder under the server's output folder.
        base: the tagged file name stem the server counts from.
        suffix: what follows ``base`` in the first file's name (``_00001_.png``); None when unknown.
        kind: the history output key the node reports its files under (``images``), None for none.
        count: how many files the node saved on a normally finished point of the batch; None if unseen.
    """

    node_id: str
    class_type: str
    subfolder: str
    base: str
    suffix: str | None
    kind: str | None
    count: int | None = None

    @property
    def first(self) -> str | None:
        """The first file's name, or None when it cannot be predicted."""
        return None if self.suffix is None else self.base + self.suffix


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=+.\-]+", "_", text).strip("_.")[:120] or "point"


def check_server_filename(filename: Any, node_id: str) -> str:
    """``filename`` when it is a plain base name; else raise :class:`UnsafeOutputName`."""
    bad = (
        not isinstance(filename, str)
        or filename in ("", ".", "..")
        or any(c in filename for c in "/\\\x00")
        or any(ord(c) < 32 for c in filename)
    )
    if bad:
        raise UnsafeOutputName(
            f"server error: node {node_id} reported the output file name {filename!r}, which is not a plain "
            "file name (ComfyUI reports folders in 'subfolder'); nothing was fetched or written for it"
        )
    return filename


def local_name(index: int, label: str, node_id: str, kind: str, i: int, server_filename: str) -> str:
    """The file name in the batch's output folder (a base name; see the module docstring)."""
    suffix = posixpath.splitext(server_filename)[1].lower()
    suffix = suffix if _SUFFIX.match(suffix) else ".bin"
    middle = "" if kind == "images" else _safe(kind)
    return f"{index:04d}_{_safe(label)}_n{_safe(node_id)}_{middle}{i}{suffix}"


def marker_tag(prompt_id: str) -> str:
    """``lk`` + the first 12 hex digits of the prompt id."""
    return "lk" + prompt_id.replace("-", "")[:12]


def tag_prompt(
    prompt: dict[str, Any], prompt_id: str, learned: dict[str, SeenFiles] | None = None
) -> tuple[dict[str, Any], list[OutputMarker]]:
    """The prompt with every string ``filename_prefix`` tagged, and a marker per tagged node.

    Args:
        prompt: API prompt (not modified; the nodes that change are copied).
        prompt_id: the point's prompt id.
        learned: what finished points of the batch showed per node (:func:`learn_saved_files`).
    """
    tag = marker_tag(prompt_id)
    tagged = dict(prompt)
    markers = []
    for node_id, node in prompt.items():
        prefix = node.get("inputs", {}).get("filename_prefix") if isinstance(node, dict) else None
        if not isinstance(prefix, str):
            continue
        value = prefix + tag if prefix in ("", "/") or prefix.endswith(("/", "\\")) else f"{prefix}_{tag}"
        tagged[node_id] = copy.deepcopy(node)
        tagged[node_id]["inputs"]["filename_prefix"] = value
        norm = posixpath.normpath(value.replace("\\", "/"))
        subfolder, base = posixpath.dirname(norm).lstrip("/"), posixpath.basename(norm)
        fixed, suffix, kind = SAVERS.get(node.get("class_type", ""), (None, None, "images"))
        seen = (learned or {}).get(node_id)
        if seen is not None:
            subfolder, suffix = seen.subfolder, seen.suffix
        elif fixed is not None:
            subfolder = fixed
        if "%" in prefix:
            suffix = None  # ComfyUI substitutes %date% etc.: the name cannot be predicted
        count = seen.count if seen else None
        markers.append(OutputMarker(node_id, node.get("class_type", ""), subfolder, base, suffix, kind, count))
    return tagged, markers


def learn_saved_files(markers: list[OutputMarker], outputs: dict[str, Any]) -> dict[str, SeenFiles]:
    """From a normally finished point's history outputs: :class:`SeenFiles` per node that saved files."""
    learned = {}
    for marker in markers:
        for items in (outputs.get(marker.node_id) or {}).values():
            records = [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []
            name = records[0].get("filename") if records else None
            if (
                records
                and records[0].get("type") == "output"
                and isinstance(name, str)
                and name.startswith(marker.base)
            ):
                subfolder = str(records[0].get("subfolder") or "")
                learned[marker.node_id] = SeenFiles(subfolder, name[len(marker.base) :], len(records))
                break
    return learned


def find_marked_files(
    markers: list[OutputMarker], view: Callable[[str, str], bytes | None]
) -> tuple[list[tuple[OutputMarker, int, str, bytes]] | None, str]:
    """The files a tagged prompt left on the server, if it finished; else None and the reason.

    ``view(subfolder, name)`` returns a file of the server's output folder or None. The prompt finished
    when every marker's first file is there and complete and, for a node seen on a finished point,
    as many files as it saved there. Returns ``(files, "")`` or ``(None, reason)``.
    """
    if not markers:
        return None, "the prompt saves no file"
    unknown = [m.node_id for m in markers if m.first is None]
    if unknown:
        nodes = ("nodes " if len(unknown) > 1 else "node ") + ", ".join(unknown[:MAX_NODES])
        return None, f"the file names of {nodes} cannot be predicted"
    found: list[tuple[OutputMarker, int, str, bytes]] = []
    for marker in markers:
        names = counter_names(marker.first) if marker.kind else [marker.first]
        got = 0
        for i, name in enumerate(names):
            data = view(marker.subfolder, name)
            if data is None:
                break
            where = f"{marker.subfolder}/{name}" if marker.subfolder else name
            if not file_is_complete(name, data):
                return None, f"{where} is cut short (the server stopped while saving it)"
            found.append((marker, i, name, data))
            got += 1
        if got == 0:
            partly = " (the files of its other nodes stay on the server)" if found else ""
            return None, f"node {marker.node_id} saved no file{partly}"
        if marker.count is not None and got < marker.count:
            return None, f"node {marker.node_id} saved {got} of its {marker.count} files"
    return found, ""


def counter_names(first: str, limit: int = 4096) -> list[str]:
    """``x_00001_.png`` -> [``x_00001_.png``, ``x_00002_.png``, ...] (the files of one saver's batch)."""
    match = re.search(r"_(00001)_?\.[^.]*$", first)
    if match is None:
        return [first]
    head, tail = first[: match.start(1)], first[match.end(1) :]
    return [f"{head}{n:05d}{tail}" for n in range(1, limit + 1)]


def file_is_complete(name: str, data: bytes) -> bool:
    """False for a PNG, WEBP or safetensors file that was cut short (a server killed while writing)."""
    lower = name.lower()
    if lower.endswith(".png"):
        return data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_END)
    if lower.endswith(".webp"):
        return data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 == len(data)
    if lower.endswith(".safetensors"):
        try:
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + n])
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return False
        return len(data) == 8 + n + end
    return True


def inside(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refusing any name that would leave ``out_dir`` (an internal invariant)."""
    path = out_dir / name
    if path.resolve().parent != out_dir.resolve() or name != Path(name).name:
        raise ValueError(f"local output name {name!r} would leave {out_dir}")
    return path
