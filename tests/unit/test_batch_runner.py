"""Batch runner against fake ComfyUI servers: dispatch, resume, restarts, rejections, reports and the CLI."""

from __future__ import annotations

import copy
import csv
import json
import threading
import time
import uuid

import batch_fixtures  # tests/unit is on sys.path
import pytest
from batch_fixtures import FAST, WORKFLOW, seeds, sweep12

from likeness.tools.batch.fake_server import fake_png
from likeness.tools.batch.manifest import Manifest
from likeness.tools.batch.runner import format_progress, run_batch

face_dir = batch_fixtures.face_dir  # a pytest fixture
servers = batch_fixtures.servers  # a pytest fixture


def test_single_server_outputs_reports_scores_and_ws_progress(servers, tmp_path, face_dir):
    (fake,) = servers()
    events = []
    report = run_batch(
        WORKFLOW, sweep12(face_dir), [fake.url], tmp_path / "out", progress=events.append, use_websocket=True, **FAST
    )
    assert report.ok and len(report.done) == 12
    assert sorted(fake.completions.values()) == [1] * 12 and sorted(fake.submissions.values()) == [1] * 12
    rec = report.by_label()["face=bob_age=+2_seed=2"]
    assert rec.index == 11 and rec.server == fake.url
    assert uuid.UUID(rec.prompt_id).version == 5
    assert rec.inputs["10.strength_1"] == 2 and rec.inputs["3.seed"] == 2
    assert rec.inputs["12.image"].startswith("likeness_batch/bob_") and rec.inputs["12.image"] in fake.uploads
    assert fake.uploads[rec.inputs["12.image"]] == b"bob" * 10
    assert [o["file"] for o in rec.outputs] == ["0011_face=bob_age=+2_seed=2_n9_0.png"]
    assert (tmp_path / "out" / rec.outputs[0]["file"]).read_bytes() == fake_png(f"{rec.prompt_id}:9".encode())
    assert rec.score == pytest.approx(0.02) and rec.scores == {"20": [0.02]}
    assert rec.started_at <= rec.finished_at and 0 <= rec.seconds < 5
    rows = list(csv.DictReader(report.csv_path.open()))
    assert [r["label"] for r in rows] == [p.label for p in report.points]
    assert (
        rows[11]["status"] == "done" and rows[11]["score"] == "0.02" and rows[11]["outputs"] == rec.outputs[0]["file"]
    )
    assert rows[11]["finished_at"].endswith("Z")
    data = json.loads(report.json_path.read_text())
    assert data["summary"] == {"total": 12, "pending": 0, "queued": 0, "done": 12, "failed": 0}
    kinds = {e.event for e in events}
    assert {"start", "queued", "done", "finish"} <= kinds
    assert any(e.node_progress == (3, 3) for e in events if e.event == "progress")  # websocket reached us
    assert events[-1].done == 12 and "12/12" in format_progress(events[-1])


def test_two_servers_share_the_work_with_short_queues(servers, tmp_path):
    a, b = servers(2, exec_time=0.04)
    report = run_batch(
        WORKFLOW, seeds(12), [a.url, b.url], tmp_path / "out", max_queue_per_server=2, use_websocket=False, **FAST
    )
    assert report.ok
    assert a.max_depth <= 2 and b.max_depth <= 2
    assert sum(a.completions.values()) >= 4 and sum(b.completions.values()) >= 4
    assert sum(a.completions.values()) + sum(b.completions.values()) == 12
    assert set(a.completions) | set(b.completions) == {p.prompt_id for p in report.points}
    one = run_batch(
        WORKFLOW, seeds(12), [a.url], tmp_path / "out1", max_queue_per_server=1, use_websocket=False, **FAST
    )
    assert one.ok and a.max_depth <= 2  # depth 1 = nothing waiting behind the running prompt


def test_kill_and_restart_mid_batch_loses_and_duplicates_nothing(servers, tmp_path, face_dir):
    a, b = servers(2, exec_time=0.04)
    killed = {}

    def chaos():
        while sum(a.completions.values()) < 2:
            time.sleep(0.002)
        killed["running"] = a.kill_when_busy()
        time.sleep(0.3)
        a.restart()

    thread = threading.Thread(target=chaos)
    thread.start()
    events = []
    report = run_batch(
        WORKFLOW,
        sweep12(face_dir),
        [a.url, b.url],
        tmp_path / "out",
        progress=events.append,
        use_websocket=True,
        **FAST,
    )
    thread.join(5)
    assert report.ok and len(report.done) == 12
    completions = a.completions + b.completions
    assert sorted(completions.values()) == [1] * 12  # every prompt ran exactly once
    assert set(completions) == {p.prompt_id for p in report.points}
    assert (a.submissions + b.submissions)[killed["running"]] == 2  # the lost prompt came back, same id
    assert {"server_down", "server_up"} <= {e.event for e in events}
    assert len(list((tmp_path / "out").glob("*_n9_0.png"))) == 12


def test_rejections_and_execution_errors_fail_points_but_not_the_batch(servers, tmp_path):
    (fake,) = servers(exec_time=0.3)  # long enough for the partly queued prompt to be interrupted
    spec = {
        "sweep": [
            {"node": "Likeness edit", "input": "strength_1", "values": [1, "__bad400__", "__bad200__", "__crash__", 2]}
        ]
    }
    report = run_batch(WORKFLOW, spec, [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    status = {p.label: p.status for p in report.points}
    assert status == {
        "strength_1=+1": "done",
        "strength_1=bad400": "failed",
        "strength_1=bad200": "failed",
        "strength_1=crash": "failed",
        "strength_1=+2": "done",
    }
    bad400, bad200, crash = report.points[1:4]
    assert "node 10 (LikenessEdit): Value not in list" in bad400.error
    assert bad400.error_details["node_errors"]["10"]["class_type"] == "LikenessEdit"
    assert "queued only part" in bad200.error and "node 10 (LikenessEdit)" in bad200.error
    assert bad200.prompt_id not in fake.completions  # the partly queued prompt was deleted, not run
    assert "node 10 (LikenessEdit) raised RuntimeError: boom" in crash.error
    assert crash.error_details["node_id"] == "10"
    assert not report.ok and "FAILED strength_1=crash" in report.summary()


def test_transient_5xx_is_retried_and_exhausted_retries_fail(servers, tmp_path):
    (fake,) = servers()
    fake.fail_5xx = 2
    report = run_batch(WORKFLOW, seeds(3), [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    assert report.ok and sorted(fake.completions.values()) == [1, 1, 1]
    fake.fail_5xx = 100
    report = run_batch(WORKFLOW, seeds(1), [fake.url], tmp_path / "out2", retries=2, use_websocket=False, **FAST)
    assert not report.ok and "gave up after retries=2" in report.points[0].error
    assert report.points[0].attempts == 3


@pytest.mark.parametrize("files_survive", [True, False])
def test_finished_prompt_is_not_rerun_when_its_download_is_interrupted(servers, tmp_path, files_survive):
    (fake,) = servers()
    fake.fail_view = 1

    def restart_on_down(event):
        if event.event == "server_down":  # the 503 on /view; the history entry is lost with the restart
            fake.kill()
            if not files_survive:
                fake.files.clear()
            fake.restart()

    report = run_batch(
        WORKFLOW, seeds(2), [fake.url], tmp_path / "out", progress=restart_on_down, use_websocket=False, **FAST
    )
    assert report.ok and all(p.outputs for p in report.points)
    first = report.points[0].prompt_id
    assert fake.completions[first] == (1 if files_survive else 2)  # rerun only when the files are gone
    assert all(p.history is None for p in Manifest.open(tmp_path / "out").records.values())


def test_unreachable_servers_fail_the_remaining_points(servers, tmp_path):
    (fake,) = servers()
    fake.kill()
    report = run_batch(
        WORKFLOW, seeds(2), [fake.url], tmp_path / "out", server_timeout=0.2, use_websocket=False, **FAST
    )
    assert [p.status for p in report.points] == ["failed", "failed"]
    assert "no server reachable for over 0 s" in report.points[0].error


class _Crash(Exception):
    pass


def _crash_after(n_queued):
    seen = []

    def progress(event):
        if event.event == "queued":
            seen.append(event)
            if len(seen) == n_queued:
                raise _Crash()

    return progress


def test_resume_skips_done_and_rechecks_queued_points(servers, tmp_path):
    (fake,) = servers(exec_time=0.02)
    out = tmp_path / "out"
    with pytest.raises(_Crash):
        run_batch(WORKFLOW, seeds(6), [fake.url], out, progress=_crash_after(4), use_websocket=False, **FAST)
    before = Manifest.open(out).records
    assert {r.status for r in before.values()} >= {"queued"}
    while not fake.idle():
        time.sleep(0.01)
    report = run_batch(WORKFLOW, seeds(6), [fake.url], out, use_websocket=False, **FAST)
    assert report.ok
    assert sorted(fake.submissions.values()) == [1] * 6 and sorted(fake.completions.values()) == [1] * 6
    assert {r.point_id: r.prompt_id for r in report.points} == {k: r.prompt_id for k, r in before.items()}
    # a third run over a finished batch submits nothing
    again = run_batch(WORKFLOW, seeds(6), [fake.url], out, use_websocket=False, **FAST)
    assert again.ok and sum(fake.submissions.values()) == 6


def test_resume_after_server_restart_resubmits_with_the_same_prompt_id(servers, tmp_path):
    (fake,) = servers()
    fake.paused = True
    out = tmp_path / "out"
    with pytest.raises(_Crash):
        run_batch(WORKFLOW, seeds(3), [fake.url], out, progress=_crash_after(2), use_websocket=False, **FAST)
    queued = {r.prompt_id for r in Manifest.open(out).records.values() if r.status == "queued"}
    assert len(queued) == 2
    fake.kill()
    fake.restart()  # empty queue and history: the two prompts are gone
    fake.paused = False
    report = run_batch(WORKFLOW, seeds(3), [fake.url], out, use_websocket=False, **FAST)
    assert report.ok
    assert {pid: fake.submissions[pid] for pid in queued} == dict.fromkeys(queued, 2)
    assert sorted(fake.completions.values()) == [1, 1, 1]


def test_retry_failed_reruns_failed_points_with_a_new_prompt_id(servers, tmp_path):
    (fake,) = servers()
    wf = copy.deepcopy(WORKFLOW)
    wf["10"]["inputs"]["strength_1"] = "__crash__"
    first = run_batch(wf, seeds(1), [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    assert first.points[0].status == "failed"
    same = run_batch(wf, seeds(1), [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    assert same.points[0].status == "failed" and len(fake.submissions) == 1  # failed points stay failed
    retried = run_batch(wf, seeds(1), [fake.url], tmp_path / "out", retry_failed=True, use_websocket=False, **FAST)
    assert retried.points[0].prompt_id != first.points[0].prompt_id and len(fake.submissions) == 2


def test_cli_queue_prints_progress_and_summary(servers, tmp_path, capsys):
    from likeness.tools.cli import main

    (fake,) = servers()
    wf_path, spec_path = tmp_path / "wf.json", tmp_path / "spec.json"
    wf_path.write_text(json.dumps(WORKFLOW))
    spec_path.write_text(json.dumps(seeds(2)))
    args = [
        "queue",
        str(wf_path),
        "--spec",
        str(spec_path),
        "--server",
        fake.url,
        "--out",
        str(tmp_path / "o"),
        "--poll",
        "0.01",
        "--no-websocket",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2/2 points done, 0 failed" in text and "[" in text
    spec_path.write_text(json.dumps(seeds(1, {"overrides": [{"node": "3", "input": "steps", "value": "__bad400__"}]})))
    assert main(args[:-4] + [str(tmp_path / "o2"), "--poll", "0.01", "--no-websocket"]) == 1
    assert "FAILED seed=1" in capsys.readouterr().out


def test_websocket_events_drive_the_batch_between_slow_polls(servers, tmp_path):
    """With the websocket, a finished prompt is collected at once; polls (every 5 s here) are the safety net."""
    a, b = servers(2, exec_time=0.05)
    t0 = time.monotonic()
    report = run_batch(
        WORKFLOW, seeds(8), [a.url, b.url], tmp_path / "out", use_websocket=True, poll_interval=5.0, backoff_cap=5.0
    )
    assert report.ok and time.monotonic() - t0 < 4.0  # 8 x 50 ms on 2 servers; one poll alone would take 5 s
    assert sorted((a.completions + b.completions).values()) == [1] * 8
    # only the server that reported a finished prompt is asked again: about 1 GET /queue per prompt, not per server
    assert a.requests["GET queue"] + b.requests["GET queue"] <= 2 * 8 + 4
