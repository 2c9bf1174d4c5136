"""Fetching a point's output files into the batch's folder, from its history entry or from its markers.

:class:`Collector` is used by the batch runner (:mod:`.runner`). ``download`` fetches every file record of
a finished prompt's history outputs (names checked first, see :mod:`.outputs`); ``recover`` finds the
files of a prompt a restarted server forgot, by the marker in their names. Both write into ``out_dir``
under local names and return the ``outputs`` entries of the point's record.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError
from .client import ComfyClient, ServerAnswerError
from .manifest import PointRecord
from .outputs import (
    SeenFiles,
    check_server_filename,
    find_marked_files,
    inside,
    learn_saved_files,
    local_name,
    tag_prompt,
)
from .spec import SweepPoint

__all__ = ["Collector"]

logger = logging.getLogger(__name__)


class Collector:
    """Writes points' files into ``out_dir``; remembers what finished points showed of their saving nodes.

    Args:
        out_dir: the batch's output folder.
        points: the batch's points by point id (their untagged prompts).
    """

    def __init__(self, out_dir: Path, points: dict[str, SweepPoint]):
        self.out_dir = out_dir
        self.points = points
        self.learned: dict[str, SeenFiles] = {}  # node id -> what a finished point showed of its files

    def learn(self, rec: PointRecord, outputs: dict[str, Any]) -> None:
        """Remember where each saving node of a normally finished point put its files, and how many."""
        _, markers = tag_prompt(self.points[rec.point_id].prompt, rec.prompt_id)
        self.learned.update(learn_saved_files(markers, outputs))

    def learn_from_record(self, rec: PointRecord) -> None:
        """:meth:`learn` from a point finished in an earlier run (its ``outputs`` entries)."""
        outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for o in sorted(rec.outputs, key=lambda o: o.get("index", 0)):
            outputs.setdefault(str(o.get("node")), {}).setdefault(str(o.get("kind", "images")), []).append(o)
        self.learn(rec, outputs)

    def download(self, client: ComfyClient, rec: PointRecord, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Fetch every file record of the history ``outputs``; every server name is checked before any fetch.

        Raises :class:`.outputs.UnsafeOutputName`, :class:`.client.ServerAnswerError` (with the file and
        node named), :class:`.client.ServerUnavailable`, or :class:`LikenessError` for a local write error.
        """
        items = []
        for node_id in sorted(outputs, key=lambda n: (len(n), n)):
            node_out = outputs[node_id] if isinstance(outputs[node_id], dict) else {}
            for kind, records in sorted(node_out.items()):
                if not isinstance(records, list):
                    continue
                records = [x for x in records if isinstance(x, dict) and "filename" in x]
                items += [
                    (node_id, kind, i, check_server_filename(x["filename"], node_id), x) for i, x in enumerate(records)
                ]
        files = []
        for node_id, kind, i, filename, item in items:
            try:
                data = client.view(item)
            except ServerAnswerError as exc:
                raise ServerAnswerError(
                    f"could not download {filename} (node {node_id}) from {client.base_url}: HTTP {exc.status} "
                    f"({exc.server_message})",
                    exc.status,
                    exc.server_message,
                ) from exc
            files.append(self._store(rec, node_id, kind, i, item, data))
        return files

    def recover(self, client: ComfyClient, rec: PointRecord) -> list[dict[str, Any]] | None:
        """The files of a prompt the server forgot, fetched, when they show it finished; else None."""
        _, markers = tag_prompt(self.points[rec.point_id].prompt, rec.prompt_id, self.learned)
        found, reason = find_marked_files(markers, lambda sub, name: self._probe(client, sub, name))
        if found is None:
            logger.info("%s left no complete output on %s: %s", rec.label, client.base_url, reason)
            return None
        return [
            self._store(rec, m.node_id, m.kind, i, {"filename": name, "subfolder": m.subfolder, "type": "output"}, data)
            for m, i, name, data in found
            if m.kind is not None
        ]

    def _probe(self, client: ComfyClient, subfolder: str, filename: str) -> bytes | None:
        """A file of the server's output folder, or None when it is not there (or may not be read)."""
        try:
            return client.view({"filename": filename, "subfolder": subfolder, "type": "output"})
        except ServerAnswerError as exc:
            if exc.status != 404:
                logger.warning("%s refused to show %s/%s: %s", client.base_url, subfolder, filename, exc)
            return None

    def _store(
        self, rec: PointRecord, node_id: str, kind: str, i: int, item: dict[str, Any], data: bytes
    ) -> dict[str, Any]:
        """Write one downloaded file into ``out_dir``; a local write error stops the batch (resumable)."""
        name = local_name(rec.index, rec.label, node_id, kind, i, item["filename"])
        path = inside(self.out_dir, name)
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise LikenessError(
                f"cannot write {path}: {exc.strerror or exc}; check the free space and permissions of the output "
                f"folder {self.out_dir}, then run the same command again to resume (nothing is lost)"
            ) from exc
        return {
            "node": node_id,
            "kind": kind,
            "index": i,
            "file": name,
            **{k: str(item.get(k, "")) for k in ("filename", "subfolder", "type")},
        }
