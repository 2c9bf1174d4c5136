"""The batch manifest (resume state) and the final reports (report.csv / report.json).

``manifest.json`` in the output folder holds one record per point, keyed by its stable ``point_id``,
written atomically (temp file + ``os.replace``) at the start and end of a run. In between, every state
change of a point is appended as one JSON line to ``manifest.journal`` (flushed before the runner acts
on it), so a change costs the same at 10 or 10,000 points. Loading replays the journal lines newer than
the snapshot (each line carries a sequence number the snapshot records); a line cut short by a crash is
the last one and is ignored, which loses nothing: its change had not been acted on yet. The journal is
folded into the snapshot when it holds more lines than 4x the points (at least 1,000).
A point's ``prompt_id`` is a UUID5 of the manifest's random ``nonce``,
the point id and the point's ``generation`` (bumped only by ``retry_failed``), and it is written to the
manifest *before* the prompt is posted: a resubmission after a crash or a server restart reuses the same
``prompt_id``, and the runner checks ``/queue`` and ``/history/{id}`` before posting again.

Statuses: ``pending`` (not on any server), ``queued`` (posted, or about to be, to ``server``),
``done`` (finished with success, outputs downloaded; a finished entry whose downloads are interrupted is
kept in ``history`` so the files are fetched later, even from a restarted server, without re-running),
``failed`` (rejected, execution error, timeout or retries exhausted; see ``error``).

Identity scores (documented convention): for every node of the prompt whose ``class_type`` contains
``score_class`` (default ``"IdentityScore"``), numbers are read from its history output: numeric values
(or strings) under ``score``/``scores``/``similarity`` and the first number in every string under ``text``. The
point's ``score`` is the first such number (nodes in id order); ``scores`` keeps all of them per node.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = [
    "PointRecord",
    "Manifest",
    "STATUSES",
    "extract_scores",
    "write_reports",
    "iso_time",
]

logger = logging.getLogger(__name__)

STATUSES = ("pending", "queued", "done", "failed")
MANIFEST_NAME = "manifest.json"
JOURNAL_NAME = "manifest.journal"
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass
class PointRecord:
    """The state of one point (everything the report shows). Times are Unix seconds (float) or None."""

    point_id: str
    index: int
    label: str
    prompt_id: str
    inputs: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    status: str = "pending"
    server: str | None = None
    attempts: int = 0
    error: str | None = None
    error_details: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    score: float | None = None
    scores: dict[str, list[float]] = field(default_factory=dict)
    history: dict[str, Any] | None = None  # finished history entry kept until its outputs are downloaded
    note: str | None = None  # e.g. how a point was collected after its server forgot it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def iso_time(t: float | None) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), '' for None."""
    if t is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


class Manifest:
    """``out_dir/manifest.json`` (+ its journal): the batch's nonce, client id and a record per point id."""

    def __init__(self, path: Path, nonce: str, client_id: str, records: dict[str, PointRecord], seq: int = 0):
        self.path = path
        self.journal_path = path.with_name(JOURNAL_NAME)
        self.nonce = nonce
        self.client_id = client_id
        self.records = records
        self.seq = seq  # number of the last change written (snapshot or journal)
        self._journal: Any = None
        self._journal_lines = 0

    @classmethod
    def open(cls, out_dir: Path) -> Manifest:
        """Load the manifest of ``out_dir`` (snapshot + journal), or start an empty one (nothing written yet)."""
        path = out_dir / MANIFEST_NAME
        if not path.exists():
            if (out_dir / JOURNAL_NAME).exists():
                raise LikenessError(
                    f"{out_dir / JOURNAL_NAME} exists without {path}; move both away to start the batch afresh"
                )
            return cls(path, uuid.uuid4().hex, uuid.uuid4().hex, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records = {pid: PointRecord.from_dict(rec) for pid, rec in data["points"].items()}
            manifest = cls(path, data["nonce"], data["client_id"], records, int(data.get("seq", 0)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LikenessError(
                f"batch manifest {path} is unreadable ({exc}); move it away to start the batch afresh "
                "(finished images in that folder are kept)"
            ) from exc
        manifest._replay()
        return manifest

    def _replay(self) -> None:
        if not self.journal_path.exists():
            return
        lines = self.journal_path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                seq, rec = int(entry["seq"]), PointRecord.from_dict(entry["point"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                if number == len(lines):  # the last line, cut short by a crash while it was written
                    logger.warning("ignoring the unfinished last line of %s", self.journal_path)
                    continue
                raise LikenessError(
                    f"line {number} of {self.journal_path} is unreadable ({exc}); move {self.path} and it away "
                    "to start the batch afresh (finished images in that folder are kept)"
                ) from exc
            if seq > self.seq:
                self.records[rec.point_id], self.seq = rec, seq
            self._journal_lines += 1

    def prompt_id(self, point_id: str, generation: int) -> str:
        """The client-chosen prompt id of a point: stable for (nonce, point id, generation)."""
        return str(uuid.uuid5(uuid.UUID(self.nonce), f"{point_id}:{generation}"))

    def record(self, point_id: str, index: int, label: str, inputs: dict[str, Any]) -> PointRecord:
        """The record of a point, created as ``pending`` if new; index/label follow the current spec."""
        rec = self.records.get(point_id)
        if rec is None:
            rec = PointRecord(point_id, index, label, self.prompt_id(point_id, 0), inputs=dict(inputs))
            self.records[point_id] = rec
        else:
            rec.index, rec.label, rec.inputs = index, label, dict(inputs)
        return rec

    def update(self, rec: PointRecord) -> None:
        """Record one point's new state: one journal line, flushed to the OS before this returns."""
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = self.journal_path.open("a", encoding="utf-8")
        self.seq += 1
        line = json.dumps({"seq": self.seq, "point": asdict(rec)}, separators=(",", ":"), default=str)
        self._journal.write(line + "\n")
        self._journal.flush()
        self._journal_lines += 1
        if self._journal_lines > max(1000, 4 * len(self.records)):
            self.save()

    def save(self) -> None:
        """Write the whole state atomically (temp file + ``os.replace``), then empty the journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": 2,
            "seq": self.seq,
            "nonce": self.nonce,
            "client_id": self.client_id,
            "points": {pid: asdict(rec) for pid, rec in self.records.items()},
        }
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.path)  # the journal's lines are now older than the snapshot's seq
        self.close()
        self.journal_path.unlink(missing_ok=True)
        self._journal_lines = 0

    def close(self) -> None:
        """Close the journal file (reopened by the next :meth:`update`)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        match = _NUMBER.search(value)
        return [float(match.group())] if match else []
    if isinstance(value, list):
        return [x for item in value for x in _numbers(item)]
    return []


def extract_scores(
    prompt: dict[str, Any], outputs: dict[str, Any], score_class: str = "IdentityScore"
) -> dict[str, list[float]]:
    """Numbers reported by score nodes: ``{node id: [numbers]}`` (see the module docstring)."""
    found: dict[str, list[float]] = {}
    for node_id in sorted(outputs, key=lambda n: (len(n), n)):
        if score_class not in prompt.get(node_id, {}).get("class_type", ""):
            continue
        out = outputs[node_id]
        nums: list[float] = []
        for key in ("score", "scores", "similarity"):
            nums += _numbers(out.get(key))
        for text in out.get("text", []) if isinstance(out.get("text"), list) else [out.get("text")]:
            if isinstance(text, str):
                nums += _numbers(text)
        if nums:
            found[node_id] = nums
    return found


REPORT_COLUMNS = (
    "index",
    "point_id",
    "label",
    "status",
    "prompt_id",
    "server",
    "attempts",
    "error",
    "score",
    "queued_at",
    "started_at",
    "finished_at",
    "seconds",
    "inputs",
    "outputs",
    "note",
)


def write_reports(out_dir: Path, records: list[PointRecord]) -> tuple[Path, Path]:
    """Write ``report.csv`` (one row per point, ISO times, JSON-encoded inputs, ``;``-joined files) and
    ``report.json`` (the full records plus a summary); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "report.csv", out_dir / "report.json"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        for rec in records:
            writer.writerow(
                [
                    rec.index,
                    rec.point_id,
                    rec.label,
                    rec.status,
                    rec.prompt_id,
                    rec.server or "",
                    rec.attempts,
                    (rec.error or "").replace("\n", " | "),
                    "" if rec.score is None else f"{rec.score:.6g}",
                    iso_time(rec.queued_at),
                    iso_time(rec.started_at),
                    iso_time(rec.finished_at),
                    "" if rec.seconds is None else f"{rec.seconds:.3f}",
                    json.dumps(rec.inputs, sort_keys=True),
                    ";".join(o["file"] for o in rec.outputs if o.get("file")),
                    rec.note or "",
                ]
            )
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    data = {
        "summary": {"total": len(records), **counts},
        "points": [
            {**asdict(rec), **{k: iso_time(getattr(rec, k)) for k in ("queued_at", "started_at", "finished_at")}}
            for rec in records
        ],
    }
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, json_path)
    return csv_path, json_path
