"""The prepared training-dataset folder: its layout, its manifest, and reading it back.

Layout (written by :func:`.prepare.prepare_dataset`)::

    <dataset>/
      dataset.json        format, method, settings, counts (rewritten at the end of every run)
      manifest.jsonl      one JSON record per processed photo, appended; the last record of a source wins
      items/<id>/
        aligned.png       the aligned face at the method's recipe (W+: 512 px; PSTF: --size, 1024 by default)
        aligned_mask.png  face mask of aligned.png (L, 255 = face)
        photo.png         W+ only: the photo, longest side <= --photo-max (stage-2 training image)
        photo_mask.png    W+ only: the face mask pasted back onto photo.png
        item.safetensors  tensors (below) + metadata {"caption": JSON list of strings, "source": ...}

``item.safetensors`` tensors: ``wplus`` [18,512] (absolute e4e W+ of the un-whitened crop),
``wplus_whitened`` [18,512] (W+ only: background painted white first, the stage-2 condition),
``embedding`` [512] and ``kps`` [5,2] (PSTF only: the antelopev2 ArcFace embedding, not normalised,
and the 5 keypoints in ``aligned.png`` pixels, viewer-left eye first).

A manifest record: ``{"id", "source", "sha256", "status": "ok" | "skipped", "reason", "faces",
"landmarks", "mask", "caption"}``. Nothing is dropped silently: every photo found gets a record.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import LikenessError

__all__ = [
    "DATASET_FORMAT",
    "METHODS",
    "IMAGE_SUFFIXES",
    "ItemRecord",
    "DatasetInfo",
    "item_id_for",
    "read_manifest",
    "append_record",
    "write_json_atomic",
    "write_item",
    "item_complete",
    "read_dataset_info",
    "write_dataset_info",
    "DatasetItem",
    "load_items",
]

logger = logging.getLogger(__name__)

DATASET_FORMAT = "likeness-training-data"
DATASET_VERSION = 1
METHODS = ("wplus", "pstf")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
ITEM_FILES = {
    "wplus": ("aligned.png", "aligned_mask.png", "photo.png", "photo_mask.png", "item.safetensors"),
    "pstf": ("aligned.png", "aligned_mask.png", "item.safetensors"),
}
ITEM_TENSORS = {"wplus": ("wplus", "wplus_whitened"), "pstf": ("wplus", "embedding", "kps")}


@dataclass
class ItemRecord:
    """One manifest line: what happened to one photo.

    Attributes:
        id: item folder name under ``items/`` (unique per source path).
        source: photo path relative to the photo folder (POSIX).
        sha256: hex digest of the photo file's bytes (resume skips unchanged photos).
        status: ``"ok"`` or ``"skipped"``.
        reason: why it was skipped ("no face", "2 faces", ...), "" when ok.
        faces: faces detected.
        landmarks: landmark kind used for alignment (``lm68``, ``lm106``, ``kps5``).
        mask: how the face mask was made (``parsenet``, ``landmark_hull``).
        caption: caption alternatives (from ``<photo>.txt``, one per line), may be empty.
    """

    id: str
    source: str
    sha256: str
    status: str
    reason: str = ""
    faces: int = 0
    landmarks: str = ""
    mask: str = ""
    caption: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class DatasetInfo:
    """``dataset.json``: what a dataset folder holds.

    Attributes:
        method: ``"wplus"`` or ``"pstf"``.
        settings: the preparation settings (recipe, sizes, face backend, embedding model, ...).
        counts: ``{"ok": n, "skipped": n, "skipped_by_reason": {...}}``.
    """

    method: str
    settings: dict[str, Any]
    counts: dict[str, Any]


def item_id_for(source: str) -> str:
    """Folder name of a photo's item: its relative path with separators made safe (unique per path)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", source.replace("/", "__"))


def read_manifest(root: Path) -> dict[str, ItemRecord]:
    """``{source: last record}`` from ``root/manifest.jsonl`` ({} when absent).

    Raises:
        LikenessError: a line is not a manifest record (the message names the line).
    """
    path = Path(root) / "manifest.jsonl"
    records: dict[str, ItemRecord] = {}
    if not path.is_file():
        return records
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = ItemRecord(**json.loads(line))
        except (ValueError, TypeError) as exc:
            if number == len(lines):  # a run killed while appending
                logger.warning("dataset: ignoring a truncated last line %d of %s (%s)", number, path, exc)
                continue
            raise LikenessError(f"{path} line {number} is not a manifest record ({exc}); fix or delete it.") from None
        records[rec.source] = rec
    return records


def append_record(root: Path, record: ItemRecord) -> None:
    """Append one record to ``manifest.jsonl`` and flush it to disk."""
    with (Path(root) / "manifest.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace`` (never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_item(
    root: Path,
    item_id: str,
    images: dict[str, np.ndarray],
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
) -> Path:
    """Write one item folder atomically (a ``.partial`` folder renamed at the end).

    Args:
        root: the dataset folder.
        item_id: folder name under ``items/``.
        images: ``{file name: uint8 [H,W,3] or [H,W] array}``.
        tensors: ``{name: tensor}`` for ``item.safetensors`` (stored float32, contiguous).
        metadata: string metadata of ``item.safetensors``.

    Returns:
        The item folder.
    """
    final = Path(root) / "items" / item_id
    tmp = final.with_name(item_id + ".partial")
    if tmp.exists():
        _remove_tree(tmp)
    tmp.mkdir(parents=True)
    for name, arr in images.items():
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp / name)
    save_file(
        {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
        str(tmp / "item.safetensors"),
        metadata=metadata,
    )
    if final.exists():
        _remove_tree(final)
    os.replace(tmp, final)
    return final


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def item_complete(root: Path, item_id: str, method: str) -> bool:
    """True when every file of the item exists (an interrupted item is redone)."""
    folder = Path(root) / "items" / item_id
    return all((folder / name).is_file() for name in ITEM_FILES[method])


def write_dataset_info(root: Path, method: str, settings: dict[str, Any]) -> DatasetInfo:
    """(Re)write ``dataset.json`` with the counts of the current manifest."""
    records = read_manifest(root).values()
    reasons: dict[str, int] = {}
    for rec in records:
        if rec.status != "ok":
            key = rec.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    counts = {
        "ok": sum(r.status == "ok" for r in records),
        "skipped": sum(r.status != "ok" for r in records),
        "skipped_by_reason": reasons,
    }
    data = {
        "format": DATASET_FORMAT,
        "format_version": DATASET_VERSION,
        "method": method,
        "settings": dict(settings),
        "counts": counts,
    }
    write_json_atomic(Path(root) / "dataset.json", data)
    return DatasetInfo(method, dict(settings), counts)


def read_dataset_info(root: str | Path) -> DatasetInfo:
    """Read and check ``dataset.json``.

    Raises:
        LikenessError: not a prepared dataset folder, or another format version.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise LikenessError(
            f"{root} is not a prepared training dataset (no dataset.json). Make one with "
            "`python -m models.cli prepare-dataset --photos FOLDER --out DIR --method wplus|pstf`."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != DATASET_FORMAT or int(data.get("format_version", -1)) != DATASET_VERSION:
        raise LikenessError(
            f"{path} has format {data.get('format')!r} version {data.get('format_version')!r}; this Likeness reads "
            f"{DATASET_FORMAT!r} version {DATASET_VERSION}. Prepare the dataset again."
        )
    if data.get("method") not in METHODS:
        raise LikenessError(f"{path}: unknown method {data.get('method')!r}; expected one of {list(METHODS)}.")
    return DatasetInfo(data["method"], dict(data.get("settings", {})), dict(data.get("counts", {})))


@dataclass(frozen=True)
class DatasetItem:
    """One usable (status ok) item of a prepared dataset.

    Attributes:
        id: item folder name.
        folder: the item folder.
        caption: caption alternatives (may be empty).
        tensors: the ``item.safetensors`` tensors (float32, CPU).
    """

    id: str
    folder: Path
    caption: tuple[str, ...]
    tensors: dict[str, torch.Tensor]

    def image(self, name: str) -> Image.Image:
        """An image file of the item (``aligned.png``, ``photo_mask.png``, ...), loaded."""
        with Image.open(self.folder / name) as img:
            img.load()
            return img.copy()


def load_items(root: str | Path, method: str) -> list[DatasetItem]:
    """Every ok item of a prepared dataset, in manifest order, tensors loaded.

    Args:
        root: the dataset folder.
        method: the trainer's method; must match ``dataset.json``.

    Raises:
        LikenessError: wrong method, no usable item, or an item with missing files or tensors.
    """
    info = read_dataset_info(root)
    if info.method != method:
        raise LikenessError(
            f"{root} was prepared for method {info.method!r} but this trainer needs {method!r}. Run prepare-dataset "
            f"with --method {method}."
        )
    items = list(_iter_ok(Path(root), method))
    if not items:
        raise LikenessError(
            f"{root} holds no usable item (counts: {info.counts}). Look at manifest.jsonl for the skip reasons."
        )
    return items


def _iter_ok(root: Path, method: str) -> Iterator[DatasetItem]:
    for rec in read_manifest(root).values():
        if rec.status != "ok":
            continue
        folder = root / "items" / rec.id
        if not item_complete(root, rec.id, method):
            raise LikenessError(
                f"item {rec.id} ({rec.source}) is marked ok in {root / 'manifest.jsonl'} but files are missing in "
                f"{folder}. Run prepare-dataset again on the same --out to redo it."
            )
        with safe_open(str(folder / "item.safetensors"), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        missing = [k for k in ITEM_TENSORS[method] if k not in tensors]
        if missing:
            raise LikenessError(f"{folder / 'item.safetensors'} lacks the tensor(s) {missing}; prepare it again.")
        yield DatasetItem(rec.id, folder, tuple(rec.caption), tensors)


def validation_item(
    face_id: str, data: str | Path, validation_data: str | Path | None, method: str
) -> DatasetItem | None:
    """The dataset item ``face_id`` of ``validation_data`` (or of ``data``) for validation images; None when unset.

    Raises:
        LikenessError: no item has that id (the message lists a few that exist).
    """
    if not face_id:
        return None
    root = validation_data or data
    items = load_items(root, method)
    for item in items:
        if item.id == face_id:
            return item
    raise LikenessError(
        f"--validation-face {face_id!r} is not an item of {root}; items are e.g. {[i.id for i in items[:5]]}."
    )
