"""A server killed right after a prompt finished: the point is collected from its files, never run twice.

The fake server kills itself at exact moments (after the prompt's files were written but before its
history entry; after the history entry but before anyone read it; in the middle of writing a file) and
is restarted with an empty queue and history, as a killed ComfyUI is. The batch runs with polling only
(the issue's case) and with the websocket.
"""

from __future__ import annotations

import threading
import time

import batch_fixtures  # tests/unit is on sys.path
import pytest
from batch_fixtures import FAST, WORKFLOW, seeds

from likeness.tools.batch.fake_server import fake_png
from likeness.tools.batch.manifest import Manifest
from likeness.tools.batch.outputs import (
    SeenFiles,
    counter_names,
    file_is_complete,
    find_marked_files,
    learn_saved_files,
    marker_tag,
    tag_prompt,
)
from likeness.tools.batch.runner import run_batch

servers = batch_fixtures.servers  # a pytest fixture


def _restart_after_kill(fake, delay=0.1):
    def run():
        if fake.killed.wait(20):
            time.sleep(delay)
            fake.restart()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("use_websocket", [False, True])
@pytest.mark.parametrize("moment", ["files", "history"])
def test_prompt_finished_just_before_a_kill_is_collected_not_rerun(servers, tmp_path, moment, use_websocket):
    (fake,) = servers(exec_time=0.05)
    fake.kill_after = (moment, 3)
    thread = _restart_after_kill(fake)
    events = []
    report = run_batch(
        WORKFLOW, seeds(6), [fake.url], tmp_path / "out", progress=events.append, use_websocket=use_websocket, **FAST
    )
    thread.join(5)
    assert report.ok, report.summary()
    assert {"server_down", "server_up"} <= {e.event for e in events}
    saved = [k for k in fake.files if k[2] == "output"]
    assert len(saved) == 6  # nothing ran twice: one saved image per point on the server
    assert set(fake.completions.values()) == {1}
    recovered = [p for p in report.points if p.note]
    assert len(recovered) == 1 and recovered[0].index == 2  # the third prompt finished as the server died
    rec = recovered[0]
    assert fake.submissions[rec.prompt_id] == 1  # posted once; its history died with the server
    assert fake.completions[rec.prompt_id] == (1 if moment == "history" else 0)
    assert "collected from" in rec.note and "scores" in rec.note
    assert rec.score is None and rec.status == "done"
    tag = marker_tag(rec.prompt_id)
    assert rec.outputs[0]["filename"] == f"x_{tag}_00001_.png" and rec.outputs[0]["type"] == "output"
    local = tmp_path / "out" / rec.outputs[0]["file"]
    assert local.read_bytes() == fake_png(f"{rec.prompt_id}:9".encode())
    others = [p for p in report.points if not p.note]
    assert all(p.score is not None and p.outputs for p in others)  # normal points keep their scores
    assert "note" in report.csv_path.read_text().splitlines()[0]
    assert Manifest.open(tmp_path / "out").records[rec.point_id].note == rec.note


def test_a_prompt_killed_while_writing_its_file_runs_again(servers, tmp_path):
    (fake,) = servers(exec_time=0.05)
    fake.kill_after = ("partial", 1)
    thread = _restart_after_kill(fake)
    report = run_batch(WORKFLOW, seeds(4), [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    thread.join(5)
    assert report.ok and not any(p.note for p in report.points)
    second = report.points[0]
    assert fake.submissions[second.prompt_id] == 2 and fake.completions[second.prompt_id] == 1
    tag = marker_tag(second.prompt_id)
    names = sorted(k[1] for k in fake.files if tag in k[1])
    assert names == [f"x_{tag}_00001_.png", f"x_{tag}_00002_.png"]  # the cut-short file stays on the server
    assert second.outputs[0]["filename"] == f"x_{tag}_00002_.png"  # the rerun's complete file was fetched
    assert (tmp_path / "out" / second.outputs[0]["file"]).read_bytes() == fake_png(f"{second.prompt_id}:9".encode())


def test_without_a_saved_file_the_documented_limit_holds(servers, tmp_path):
    """A workflow that saves nothing (previews only) leaves no marker: that prompt runs again."""
    (fake,) = servers(exec_time=0.05)
    workflow = {k: v for k, v in WORKFLOW.items() if k != "9"}
    workflow["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    fake.kill_after = ("history", 1)
    thread = _restart_after_kill(fake)
    report = run_batch(workflow, seeds(3), [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    thread.join(5)
    assert report.ok
    assert sorted(fake.completions.values()) == [1, 1, 2]  # ran twice, as the README says it may


def test_resume_after_a_client_crash_and_a_server_kill_collects_the_finished_prompt(servers, tmp_path):
    (fake,) = servers(exec_time=0.05)
    out = tmp_path / "out"

    class Crash(Exception):
        pass

    def crash_when_queued(event):
        if event.event == "queued" and event.queued == 2:
            raise Crash()

    fake.paused = True
    with pytest.raises(Crash):
        run_batch(WORKFLOW, seeds(3), [fake.url], out, progress=crash_when_queued, use_websocket=False, **FAST)
    fake.kill_after = ("files", 1)  # the first prompt's files are written, then the server dies
    fake.paused = False
    assert fake.killed.wait(5)
    fake.restart()
    report = run_batch(WORKFLOW, seeds(3), [fake.url], out, use_websocket=False, **FAST)
    assert report.ok
    assert [bool(p.note) for p in report.points] == [True, False, False]
    assert sorted(k[1] for k in fake.files) == sorted(
        f"x_{marker_tag(p.prompt_id)}_00001_.png" for p in report.points
    )  # one file per point: nothing ran twice


def test_markers_tag_every_string_prefix_and_predict_the_first_file():
    prompt = {
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "likeness/portrait"}},
        "8": {"class_type": "Likeness_SaveWPlus", "inputs": {"filename_prefix": "dir/identity"}},
        "7": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/"}},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "%date%/x"}},
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": ["1", 0]}},
    }
    pid = "3f2a9c01-b7de-5abc-8def-0123456789ab"
    tagged, markers = tag_prompt(prompt, pid)
    assert marker_tag(pid) == "lk3f2a9c01b7de"
    assert tagged["9"]["inputs"]["filename_prefix"] == "likeness/portrait_lk3f2a9c01b7de"
    assert tagged["7"]["inputs"]["filename_prefix"] == "video/lk3f2a9c01b7de"
    assert tagged["5"] is prompt["5"] and prompt["9"]["inputs"]["filename_prefix"] == "likeness/portrait"
    by_node = {m.node_id: m for m in markers}
    assert set(by_node) == {"9", "8", "7", "6"}
    assert (by_node["9"].subfolder, by_node["9"].first) == ("likeness", "portrait_lk3f2a9c01b7de_00001_.png")
    assert (by_node["8"].subfolder, by_node["8"].first, by_node["8"].kind) == (
        "likeness_wplus",
        "identity_lk3f2a9c01b7de_00001.safetensors",
        None,
    )
    assert by_node["7"].first is None and by_node["6"].first is None  # unknown saver; %date% variables
    # a finished point teaches the file name of an unknown saver
    learned = learn_saved_files(
        markers, {"7": {"images": [{"filename": "lk3f2a9c01b7de_00001_.mp4", "subfolder": "video", "type": "output"}]}}
    )
    assert learned == {"7": SeenFiles("video", "_00001_.mp4", 1)}
    _, again = tag_prompt(prompt, "00000000-0000-5000-8000-000000000000", learned)
    assert {m.node_id: m.first for m in again}["7"] == "lk000000000000_00001_.mp4"


def test_file_completeness_and_counter_names():
    assert file_is_complete("a.png", fake_png(b"x")) and not file_is_complete("a.png", fake_png(b"x")[:-3])
    assert file_is_complete("a.webp", b"RIFF" + (4).to_bytes(4, "little") + b"WEBP")
    assert not file_is_complete("a.webp", b"RIFF" + (40).to_bytes(4, "little") + b"WEBP")
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    st = len(header).to_bytes(8, "little") + header + b"\0\0\0\0"
    assert file_is_complete("a.safetensors", st) and not file_is_complete("a.safetensors", st[:-1])
    assert file_is_complete("a.latent", b"anything")
    assert counter_names("x_00001_.png", limit=3) == ["x_00001_.png", "x_00002_.png", "x_00003_.png"]
    assert counter_names("id_00001.safetensors", limit=2) == ["id_00001.safetensors", "id_00002.safetensors"]


def _disk(files):
    return lambda sub, name: files.get(f"{sub}/{name}")


def test_finished_means_every_saver_left_complete_files_and_as_many_as_a_finished_point():
    prompt = {
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a/x"}},
        "8": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "b/y"}},
    }
    pid = "3f2a9c01-b7de-5abc-8def-0123456789ab"
    _, markers = tag_prompt(prompt, pid)
    x1, y1 = "a/x_lk3f2a9c01b7de_00001_.png", "b/y_lk3f2a9c01b7de_00001_.webp"
    webp = b"RIFF" + (4).to_bytes(4, "little") + b"WEBP"
    found, reason = find_marked_files(markers, _disk({x1: fake_png(b"1"), y1: webp}))
    assert reason == "" and [(m.node_id, i, name) for m, i, name, _ in found] == [
        ("9", 0, "x_lk3f2a9c01b7de_00001_.png"),
        ("8", 0, "y_lk3f2a9c01b7de_00001_.webp"),
    ]
    assert find_marked_files(markers, _disk({x1: fake_png(b"1")})) == (
        None,
        "node 8 saved no file (the files of its other nodes stay on the server)",
    )
    assert find_marked_files(markers, _disk({x1: fake_png(b"1")[:5], y1: webp}))[1] == (
        f"{x1} is cut short (the server stopped while saving it)"
    )
    # a finished point showed that node 9 saves a batch of 3 images: 2 of 3 is not finished
    outputs = {
        "9": {
            "images": [
                {"filename": f"x_lk3f2a9c01b7de_0000{i}_.png", "subfolder": "a", "type": "output"} for i in (1, 2, 3)
            ]
        }
    }
    learned = learn_saved_files(markers, outputs)
    assert learned["9"] == SeenFiles("a", "_00001_.png", 3)
    _, markers = tag_prompt(prompt, pid, learned)
    two = {x1: fake_png(b"1"), "a/x_lk3f2a9c01b7de_00002_.png": fake_png(b"2"), y1: webp}
    assert find_marked_files(markers, _disk(two)) == (None, "node 9 saved 2 of its 3 files")
    assert find_marked_files([], _disk({}))[1] == "the prompt saves no file"
    odd = {"1": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "v"}}}
    assert find_marked_files(tag_prompt(odd, pid)[1], _disk({}))[1] == "the file names of node 1 cannot be predicted"
