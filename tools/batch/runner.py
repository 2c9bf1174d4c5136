"""Batch queue: run a sweep of an API workflow on one or more ComfyUI servers, resumably.

``run_batch(workflow, spec, servers, out_dir)`` expands the spec (:mod:`.spec`), then loops:

* **reconcile** each server: snapshot ``GET /queue`` first, then ``GET /history/{id}`` for each of our
  prompts on it. In history -> finished (download outputs, record). In the queue snapshot -> still in
  flight. Neither -> the server forgot it (a restart) or the post never arrived (ComfyUI moves a prompt
  from the queue to the history under one lock, so "in neither" after "not in the queue" is reliable).
  Such a prompt is first looked up in the server's output folder by its marker (:mod:`.outputs`: every
  ``filename_prefix`` carries ``_lk<prompt id>``): if every file-saving node left its complete first
  file, the prompt finished before the server died and its files are collected (``note`` says so);
  otherwise it is posted again with the SAME ``prompt_id``. The same check runs when a batch resumes.
* **dispatch**: the next pending point goes to the reachable server with the fewest of our prompts in
  flight, as long as it has fewer than ``max_queue_per_server`` of ours and its whole queue (other users
  included) is shorter than that; so each server runs one prompt with at most one waiting (default 2).
* **transient failures** (:class:`~.client.ServerUnavailable`: refused/reset, timeouts, HTTP 5xx) mark the
  server down; it is probed again with exponential backoff. After ``server_timeout`` seconds down, its
  prompts go back to the pending pool (same ``prompt_id``); when every server has been down that long the
  remaining points fail. A point lost more than ``retries`` times fails. A refusal that concerns one point
  fails that point only, with ComfyUI's text: :class:`~.client.PromptRejected` (HTTP 400, or 200 with
  ``node_errors``), another 4xx answer to its prompt or face upload, an execution error, an output file
  name with a path component. A server that does not answer ``GET /queue`` like ComfyUI stops the batch
  ("is it a ComfyUI server?"); so does a local write error (disk full): both are resumable.
* **progress**: ``progress(BatchProgress)`` is called from the calling thread; the optional websocket
  (:mod:`.ws`) only speeds reactions up and adds node progress.

Outputs: every file record (``images``, ``gifs``, ... with a ``filename``) of every output node is
fetched via ``/view`` into ``out_dir`` as ``<index:04d>_<label>_n<node>_<i><ext>``; ``report.csv`` and
``report.json`` are written at the end (see :mod:`.manifest` for columns and identity scores).
"""

from __future__ import annotations

import copy
import heapq
import logging
import queue as queue_mod
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError
from .client import (
    ComfyClient,
    PromptRejected,
    PromptResult,
    ServerAnswerError,
    ServerUnavailable,
    is_transient,
)
from .collect import Collector
from .manifest import Manifest, PointRecord, extract_scores, write_reports
from .outputs import UnsafeOutputName, tag_prompt
from .spec import FaceInput, SweepPoint, expand_spec, load_json, load_spec
from .ws import WsFollower, websocket_available

__all__ = ["run_batch", "BatchReport", "BatchProgress", "format_progress", "is_transient"]

logger = logging.getLogger(__name__)


@dataclass
class BatchProgress:
    """One progress event. ``event``: start, queued, progress, done, failed, server_down, server_up, finish."""

    event: str
    total: int
    done: int
    failed: int
    queued: int
    message: str = ""
    label: str | None = None
    server: str | None = None
    node_progress: tuple[int, int] | None = None


def format_progress(p: BatchProgress, width: int = 30) -> str:
    """``[#######-------]  7/12 done, 1 failed, 2 running | <message>``."""
    finished = p.done + p.failed
    filled = int(width * finished / p.total) if p.total else width
    bar = "#" * filled + "-" * (width - filled)
    text = f"[{bar}] {finished:>{len(str(p.total))}}/{p.total} done={p.done} failed={p.failed} queued={p.queued}"
    if p.node_progress:
        text += f" step {p.node_progress[0]}/{p.node_progress[1]}"
    return f"{text} | {p.message}" if p.message else text


@dataclass
class BatchReport:
    """The result of :func:`run_batch`: a record per point of the current spec, in spec order."""

    out_dir: Path
    points: list[PointRecord]
    csv_path: Path
    json_path: Path
    manifest_path: Path

    @property
    def done(self) -> list[PointRecord]:
        return [p for p in self.points if p.status == "done"]

    @property
    def failed(self) -> list[PointRecord]:
        return [p for p in self.points if p.status != "done"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def by_label(self) -> dict[str, PointRecord]:
        return {p.label: p for p in self.points}

    def summary(self) -> str:
        lines = [f"{len(self.done)}/{len(self.points)} points done, {len(self.failed)} failed; report: {self.csv_path}"]
        for rec in self.failed:
            lines.append(f"  FAILED {rec.label} (prompt {rec.prompt_id} on {rec.server}): {rec.error}")
        return "\n".join(lines)


class _Server:
    def __init__(self, url: str, client_id: str, timeout: float):
        self.url = url.rstrip("/")
        self.client = ComfyClient(self.url, timeout=timeout)
        self.client.client_id = client_id
        self.down_since: float | None = None
        self.next_try = 0.0
        self.failures = 0
        self.remote_depth = 0
        self.uploaded: dict[Path, str] = {}
        self.inflight: dict[str, PointRecord] = {}  # our queued points on this server, by point id
        self.dirty = True  # reconcile at the next turn (a websocket event, or the first look)
        self.next_poll = 0.0  # monotonic time of the next reconcile when no event comes

    def upload(self, face: FaceInput) -> str:
        """Upload a face once per server (under its content-hashed name); returns the LoadImage value."""
        if face.path not in self.uploaded:
            self.uploaded[face.path] = self.client.upload_image(
                face.path, subfolder=face.subfolder, overwrite=True, name=face.upload_name
            )
        return self.uploaded[face.path]


_END_ERRORS = ("execution_error", "execution_interrupted")
_FINISH_EVENTS = ("execution_success", *_END_ERRORS)


def _timestamps(messages: list[Any]) -> tuple[float | None, float | None]:
    start = end = None
    for item in messages:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict)):
            continue
        kind, data = item
        ts = data.get("timestamp")
        if not isinstance(ts, (int, float)):
            continue
        if kind == "execution_start":
            start = ts / 1000.0
        elif kind in _FINISH_EVENTS:
            end = ts / 1000.0
    return start, end


class _Runner:
    def __init__(
        self,
        points: list[SweepPoint],
        servers: Sequence[str],
        out_dir: Path,
        *,
        retries: int,
        max_queue_per_server: int,
        progress: Callable[[BatchProgress], None] | None,
        poll_interval: float,
        server_timeout: float,
        point_timeout: float,
        request_timeout: float,
        use_websocket: bool | None,
        retry_failed: bool,
        score_class: str,
        backoff_cap: float,
    ):
        if not servers:
            raise LikenessError("run_batch needs at least one server URL, e.g. http://127.0.0.1:8188")
        if max_queue_per_server < 1 or retries < 0 or poll_interval <= 0:
            raise LikenessError(
                f"need max_queue_per_server >= 1, retries >= 0 and poll_interval > 0; got "
                f"{max_queue_per_server}, {retries}, {poll_interval}"
            )
        self.points = {p.point_id: p for p in points}
        self.out_dir = out_dir
        self.retries, self.max_queue = retries, max_queue_per_server
        self.progress_cb = progress
        self.poll, self.server_timeout, self.point_timeout = poll_interval, server_timeout, point_timeout
        self.backoff_cap, self.score_class = backoff_cap, score_class
        self.manifest = Manifest.open(out_dir)
        self.servers = [_Server(u, self.manifest.client_id, request_timeout) for u in dict.fromkeys(servers)]
        self.by_url = {s.url: s for s in self.servers}
        self.records = [self.manifest.record(p.point_id, p.index, p.label, p.inputs) for p in points]
        self.collector = Collector(out_dir, self.points)
        self.counts: Counter[str] = Counter()
        self.pending: list[tuple[int, str]] = []  # heap of (index, point id); stale entries are skipped
        self.by_prompt: dict[str, PointRecord] = {}
        self._prepare(retry_failed)
        self.wake = threading.Event()
        self.events: queue_mod.Queue[tuple[str, dict[str, Any]]] = queue_mod.Queue()
        want_ws = websocket_available() if use_websocket is None else use_websocket
        if want_ws and not websocket_available():
            raise LikenessError("use_websocket=True needs the websocket-client package: pip install websocket-client")
        self.followers = (
            [WsFollower(s.url, self.manifest.client_id, self._on_ws) for s in self.servers] if want_ws else []
        )

    # ---- bookkeeping -------------------------------------------------------------------------------
    def _prepare(self, retry_failed: bool) -> None:
        for rec in self.records:
            if rec.status == "failed" and retry_failed:
                rec.generation += 1
                rec.prompt_id = self.manifest.prompt_id(rec.point_id, rec.generation)
                rec.status, rec.server, rec.error, rec.error_details, rec.attempts = "pending", None, None, None, 0
                rec.note = None
            elif rec.status == "queued" and rec.server not in self.by_url:
                logger.warning(
                    "point %s was queued on %s, which is not in this run's servers; requeueing it "
                    "elsewhere with the same prompt id",
                    rec.label,
                    rec.server,
                )
                rec.status, rec.server = "pending", None
            elif rec.status == "done" and rec.outputs and not rec.note:
                self.collector.learn_from_record(rec)
            self.counts[rec.status] += 1
            self.by_prompt[rec.prompt_id] = rec
            if rec.status == "pending":
                heapq.heappush(self.pending, (rec.index, rec.point_id))
            elif rec.status == "queued":
                self.by_url[rec.server].inflight[rec.point_id] = rec
        if len(self.records) - self.counts["pending"]:
            logger.info(
                "resuming batch in %s: %d done, %d failed, %d queued earlier",
                self.out_dir,
                *(self.counts[s] for s in ("done", "failed", "queued")),
            )
        self.manifest.save()

    def _set(self, rec: PointRecord, status: str, server: _Server | None = None) -> None:
        """Change a point's status, keeping the counts, the pending heap and the per-server sets in step."""
        if rec.status == "queued" and rec.server in self.by_url:
            self.by_url[rec.server].inflight.pop(rec.point_id, None)
        self.counts[rec.status] -= 1
        self.counts[status] += 1
        rec.status = status
        if status == "queued" and server is not None:
            rec.server = server.url
            server.inflight[rec.point_id] = rec
        elif status == "pending":
            rec.server = None
            heapq.heappush(self.pending, (rec.index, rec.point_id))

    def _unfinished(self) -> bool:
        return self.counts["pending"] + self.counts["queued"] > 0

    def _emit(
        self,
        event: str,
        rec: PointRecord | None = None,
        message: str = "",
        server: str | None = None,
        node_progress: tuple[int, int] | None = None,
    ) -> None:
        p = BatchProgress(
            event,
            len(self.records),
            self.counts["done"],
            self.counts["failed"],
            self.counts["queued"],
            message,
            rec.label if rec else None,
            server or (rec.server if rec else None),
            node_progress,
        )
        if event in ("done", "failed", "server_down", "server_up", "finish"):  # the callback shows it otherwise
            logger.log(logging.DEBUG if self.progress_cb else logging.INFO, "%s", format_progress(p))
        if self.progress_cb is not None:
            self.progress_cb(p)

    def _fail(self, rec: PointRecord, error: str, details: dict[str, Any] | None = None) -> None:
        self._set(rec, "failed")
        rec.error, rec.error_details, rec.history = error, details, None
        rec.finished_at = rec.finished_at or time.time()
        self.manifest.update(rec)
        self._emit("failed", rec, f"{rec.label}: {error.splitlines()[0] if error else ''}")

    def _done(self, rec: PointRecord, files: list[dict[str, Any]]) -> None:
        self._set(rec, "done")
        rec.outputs, rec.error, rec.error_details, rec.history = files, None, None, None
        self.manifest.update(rec)
        score = f", score {rec.score:.4g}" if rec.score is not None else ""
        self._emit("done", rec, f"{rec.label}: {len(files)} file(s){score}" + (" (recovered)" if rec.note else ""))

    # ---- websocket events (handed over from the follower threads) ----------------------------------
    def _on_ws(self, url: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("execution_start", "progress", *_FINISH_EVENTS) or kind == "executing":
            self.events.put((url, message))
        if kind in _FINISH_EVENTS or (kind == "executing" and (message.get("data") or {}).get("node") is None):
            self.wake.set()

    def _drain_ws(self) -> None:
        """Apply websocket events: start times, node progress, and a reconcile of a server that finished one."""
        while True:
            try:
                url, message = self.events.get_nowait()
            except queue_mod.Empty:
                return
            data = message.get("data") or {}
            rec = self.by_prompt.get(data.get("prompt_id", ""))
            if rec is None or rec.status != "queued" or rec.server != url:
                continue
            kind = message.get("type")
            if kind in _FINISH_EVENTS or (kind == "executing" and data.get("node") is None):
                self.by_url[url].dirty = True
            elif kind == "execution_start" and rec.started_at is None:
                ts = data.get("timestamp")
                rec.started_at = ts / 1000.0 if isinstance(ts, (int, float)) else time.time()
            elif kind == "progress":
                self._emit(
                    "progress",
                    rec,
                    f"{rec.label} node {data.get('node')}",
                    node_progress=(int(data.get("value", 0)), int(data.get("max", 0))),
                )

    # ---- per server ----------------------------------------------------------------------------------
    def _mark_down(self, server: _Server, exc: BaseException) -> None:
        now = time.monotonic()
        server.failures += 1
        server.next_try = now + min(self.poll * 2**server.failures, self.backoff_cap)
        server.uploaded.clear()  # a restarted/replaced server may have lost its input folder
        if server.down_since is None:
            server.down_since = now
            logger.warning(
                "server %s unreachable (%s); retrying with backoff for up to %.0f s",
                server.url,
                exc,
                self.server_timeout,
            )
            self._emit("server_down", message=f"{server.url} unreachable: {exc}", server=server.url)

    def _mark_up(self, server: _Server) -> None:
        if server.down_since is not None:
            logger.info("server %s is back after %.1f s", server.url, time.monotonic() - server.down_since)
            self._emit("server_up", message=f"{server.url} is back", server=server.url)
        server.down_since, server.failures = None, 0

    def _due(self, server: _Server, now: float) -> bool:
        """Reconcile now: a websocket event or the poll interval (every server is polled, events or not)."""
        if server.down_since is not None:
            return now >= server.next_try
        return server.dirty or now >= server.next_poll

    def _reconcile(self, server: _Server) -> None:
        server.dirty, server.next_poll = False, time.monotonic() + self.poll
        running, pending = server.client.queue_ids()  # snapshot BEFORE the history look-ups
        in_queue = set(running) | set(pending)
        server.remote_depth = len(in_queue)
        for rec in sorted(server.inflight.values(), key=lambda r: r.index):
            if rec.history is not None:  # finished earlier; only its downloads are missing
                self._finish(server, rec, rec.history, fresh=False)
                continue
            entry = server.client.history_entry(rec.prompt_id)
            status = (entry or {}).get("status") or {}
            if entry is not None and (status.get("completed", True) or status.get("status_str") == "error"):
                self._finish(server, rec, entry)
            elif rec.prompt_id in in_queue:
                if rec.prompt_id in running and rec.started_at is None:
                    rec.started_at = time.time()
                if rec.queued_at is not None and time.time() - rec.queued_at > self.point_timeout:
                    self._cancel(server, rec)
            elif not self._recover(server, rec):
                logger.warning(
                    "prompt %s (%s) is in neither the queue nor the history of %s and left no output files; "
                    "submitting it again with the same prompt id",
                    rec.prompt_id,
                    rec.label,
                    server.url,
                )
                self._submit(server, rec)

    def _cancel(self, server: _Server, rec: PointRecord) -> None:
        server.client.delete_queued([rec.prompt_id])
        server.client.interrupt(rec.prompt_id)
        self._fail(
            rec,
            f"did not finish within point_timeout={self.point_timeout:.0f} s on {server.url}; "
            "deleted from its queue / interrupted",
        )

    def _submit(self, server: _Server, rec: PointRecord) -> None:
        """Post a point (uploading its face first); a refusal fails the point, ServerUnavailable propagates."""
        if rec.attempts > self.retries:
            self._fail(
                rec,
                f"lost by the server {rec.attempts} times (server restarts or HTTP 5xx); "
                f"gave up after retries={self.retries}",
            )
            return
        point = self.points[rec.point_id]
        prompt, _ = tag_prompt(point.prompt, rec.prompt_id)
        if point.face is not None:
            try:
                value = server.upload(point.face)
            except ServerAnswerError as exc:
                self._fail(
                    rec,
                    f"{server.url} refused the upload of face {point.face.path.name} into input/"
                    f"{point.face.subfolder} (HTTP {exc.status}: {exc.server_message}); check the image and the "
                    "spec's faces.subfolder",
                )
                return
            if value != point.face.value:
                logger.info("server %s stored face %s as %s", server.url, point.face.path, value)
            prompt[point.face.node_id] = copy.deepcopy(prompt[point.face.node_id])
            prompt[point.face.node_id]["inputs"][point.face.input] = value
        # recorded before posting: a crash in between is caught by the next reconcile (same prompt id)
        self._set(rec, "queued", server)
        rec.queued_at, rec.started_at = time.time(), None
        rec.attempts += 1
        self.manifest.update(rec)
        try:
            server.client.queue(prompt, prompt_id=rec.prompt_id)
        except PromptRejected as exc:
            if exc.details.get("prompt_id"):  # 200 + node_errors: part of it was queued; do not run it
                try:
                    server.client.delete_queued([rec.prompt_id])
                    server.client.interrupt(rec.prompt_id)
                except (ServerUnavailable, ServerAnswerError) as cancel_exc:
                    logger.warning(
                        "could not cancel the partly queued prompt %s on %s: %s", rec.prompt_id, server.url, cancel_exc
                    )
            self._fail(
                rec, str(exc), {"node_errors": exc.details.get("node_errors", {}), "error": exc.details.get("error")}
            )
            return
        except ServerAnswerError as exc:
            hint = "; is it a ComfyUI server (check the URL and port)?" if exc.status in (404, 405) else ""
            self._fail(rec, f"{server.url} refused the prompt: {exc}{hint}", {"status": exc.status})
            return
        server.remote_depth += 1
        self._emit("queued", rec, f"{rec.label} -> {server.url}")

    def _finish(self, server: _Server, rec: PointRecord, entry: dict[str, Any], fresh: bool = True) -> None:
        status = entry.get("status") or {}
        messages = status.get("messages", []) or []
        start, end = _timestamps(messages)
        rec.started_at = start or rec.started_at
        rec.finished_at = end or time.time()
        rec.seconds = rec.finished_at - rec.started_at if rec.started_at is not None else None
        outputs = entry.get("outputs", {}) or {}
        if status.get("status_str") == "error":
            details = next(
                (m[1] for m in messages if isinstance(m, (list, tuple)) and len(m) == 2 and m[0] in _END_ERRORS),
                None,
            )
            error = PromptResult(rec.prompt_id, "error", outputs, messages).error_message()
            self._fail(rec, f"execution failed on {server.url}: {error}", details)
            return
        if fresh and outputs:  # kept until the files are here: a restart or crash mid-download loses nothing
            rec.history = {"outputs": outputs, "status": status}
            self.manifest.update(rec)
        try:
            files = self.collector.download(server.client, rec, outputs)
        except UnsafeOutputName as exc:
            self._fail(rec, str(exc))
            return
        except ServerAnswerError as exc:
            if not fresh and exc.status == 404:
                logger.warning("outputs of %s are gone from %s; running the prompt again", rec.label, server.url)
                rec.history = None
                self._submit(server, rec)
                return
            self._fail(rec, str(exc))
            return
        self.collector.learn(rec, outputs)
        rec.note = None
        rec.scores = extract_scores(self.points[rec.point_id].prompt, outputs, self.score_class)
        rec.score = next((v[0] for v in rec.scores.values() if v), None)
        self._done(rec, files)

    def _recover(self, server: _Server, rec: PointRecord) -> bool:
        """Collect a prompt the server forgot (killed after it finished) from its marked output files."""
        files = self.collector.recover(server.client, rec)
        if files is None:
            return False
        rec.note = (
            f"collected from {server.url}'s output folder: the server forgot the prompt (restart) after it "
            "finished; its text outputs (scores) and previews were lost with the server's history"
        )
        logger.warning("%s: %s", rec.label, rec.note)
        rec.finished_at = rec.finished_at or time.time()
        self._done(rec, files)
        return True

    def _next_pending(self) -> PointRecord | None:
        while self.pending:
            rec = self.records[self.pending[0][0]]
            if rec.status == "pending" and rec.point_id == self.pending[0][1]:
                return rec
            heapq.heappop(self.pending)  # stale: the point left the pending state
        return None

    def _dispatch(self) -> None:
        """Give pending points, lowest index first, to the least busy servers with room (see module doc)."""
        while (rec := self._next_pending()) is not None:
            ready = [
                s
                for s in self.servers
                if s.down_since is None and len(s.inflight) < self.max_queue and s.remote_depth < self.max_queue
            ]
            if not ready:
                return
            server = min(ready, key=lambda s: (len(s.inflight), s.remote_depth, self.servers.index(s)))
            try:
                self._submit(server, rec)
            except ServerUnavailable as exc:
                self._mark_down(server, exc)

    def _expire(self) -> bool:
        """Requeue the prompts of servers down too long; False when every server is down too long."""
        now = time.monotonic()
        expired = [s for s in self.servers if s.down_since is not None and now - s.down_since > self.server_timeout]
        for server in expired:
            for rec in list(server.inflight.values()):
                logger.warning(
                    "server %s down for over %.0f s: moving %s to another server (same prompt id)",
                    server.url,
                    self.server_timeout,
                    rec.label,
                )
                self._set(rec, "pending")
                self.manifest.update(rec)
        return len(expired) < len(self.servers)

    # ---- main loop -------------------------------------------------------------------------------------
    def _turn(self) -> bool:
        """One round: websocket events, due reconciles, dispatch, expiry. False when no server is left."""
        self._drain_ws()
        now = time.monotonic()
        for server in self.servers:
            if not self._due(server, now):
                continue
            try:
                self._reconcile(server)
            except ServerUnavailable as exc:
                self._mark_down(server, exc)
                continue
            except ServerAnswerError as exc:
                raise LikenessError(
                    f"server {server.url} answered unexpectedly ({exc}); is it a ComfyUI server? Check the URL and port"
                ) from exc
            self._mark_up(server)
        self._dispatch()
        if self._expire():
            return True
        where = ", ".join(s.url for s in self.servers)
        for rec in [r for r in self.records if r.status in ("pending", "queued")]:
            self._fail(rec, f"no server reachable for over {self.server_timeout:.0f} s ({where})")
        return False

    def _sleep(self) -> None:
        """Wait for a websocket event or the next due reconcile, whichever comes first."""
        if not self.events.empty():
            return
        now = time.monotonic()
        due = [s.next_try if s.down_since is not None else s.next_poll for s in self.servers]
        self.wake.wait(max(0.0, min(min(due) - now, self.poll)))
        self.wake.clear()

    def run(self) -> BatchReport:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for follower in self.followers:
            follower.start()
        self._emit("start", message=f"{len(self.records)} points on {len(self.servers)} server(s)")
        try:
            while self._unfinished() and self._turn():
                if self._unfinished():
                    self._sleep()
        finally:
            for follower in self.followers:
                follower.stop(wait=False)
            for follower in self.followers:
                follower.stop()
            for server in self.servers:
                server.client.close()
            self.manifest.save()
            csv_path, json_path = write_reports(self.out_dir, self.records)
        report = BatchReport(self.out_dir, list(self.records), csv_path, json_path, self.manifest.path)
        self._emit("finish", message=report.summary().splitlines()[0])
        return report


def run_batch(
    workflow: dict[str, Any] | str | Path,
    spec: dict[str, Any] | str | Path,
    servers: Sequence[str],
    out_dir: str | Path,
    *,
    retries: int = 3,
    max_queue_per_server: int = 2,
    progress: Callable[[BatchProgress], None] | None = None,
    poll_interval: float = 0.5,
    server_timeout: float = 120.0,
    point_timeout: float = 3600.0,
    request_timeout: float = 30.0,
    use_websocket: bool | None = None,
    retry_failed: bool = False,
    score_class: str = "IdentityScore",
    backoff_cap: float = 10.0,
) -> BatchReport:
    """Run every point of a sweep on ComfyUI servers; resumable from ``out_dir/manifest.json``.

    Args:
        workflow: API-format workflow (dict or JSON file).
        spec: sweep spec (dict or JSON file; a relative faces folder is relative to the file).
        servers: base URLs, e.g. ``["http://127.0.0.1:8188"]``.
        out_dir: folder for the manifest, downloaded outputs and ``report.csv``/``report.json``.
        retries: how many times a point lost by a server (restart, 5xx) is resubmitted before it fails.
        max_queue_per_server: our prompts in flight per server (running + waiting); 2 = one waiting.
        progress: called with a :class:`BatchProgress` on every event, from the calling thread.
        poll_interval: seconds between history polls (and the backoff base), > 0.
        server_timeout: seconds a server may stay unreachable before its prompts move elsewhere.
        point_timeout: seconds a prompt may stay queued/running before it is cancelled and failed.
        request_timeout: seconds per HTTP request.
        use_websocket: follow ``/ws`` for progress; None = when websocket-client is installed.
        retry_failed: on resume, run failed points again (with a new prompt id).
        score_class: class_type substring of nodes whose outputs carry identity scores.
        backoff_cap: longest wait in seconds between probes of a down server.

    Returns:
        A :class:`BatchReport`; ``report.ok`` is False when any point failed.
    """
    wf, _ = load_json(workflow, "workflow")
    sp, base = load_spec(spec)
    points = expand_spec(wf, sp, base)
    runner = _Runner(
        points,
        list(servers),
        Path(out_dir),
        retries=retries,
        max_queue_per_server=max_queue_per_server,
        progress=progress,
        poll_interval=poll_interval,
        server_timeout=server_timeout,
        point_timeout=point_timeout,
        request_timeout=request_timeout,
        use_websocket=use_websocket,
        retry_failed=retry_failed,
        score_class=score_class,
        backoff_cap=backoff_cap,
    )
    return runner.run()
