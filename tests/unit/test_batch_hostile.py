"""The batch client does not trust the server: hostile output names, 400 answers, refused uploads, and
local write errors each end in a clear per-point failure or a resumable stop, never a wrong verdict."""

from __future__ import annotations

import copy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import batch_fixtures  # tests/unit is on sys.path
import pytest
from batch_fixtures import FAST, WORKFLOW, assert_clear, seeds

from likeness.models.errors import LikenessError
from likeness.tools.batch.outputs import UnsafeOutputName, check_server_filename, local_name
from likeness.tools.batch.runner import run_batch

face_dir = batch_fixtures.face_dir  # a pytest fixture
servers = batch_fixtures.servers  # a pytest fixture


@pytest.mark.parametrize("name", ["../../../x", "sub/dir", "..", "a\\b.png", "x\x00.png", ""])
def test_output_names_with_a_path_are_server_errors(name):
    with pytest.raises(UnsafeOutputName, match="server error: node 9 reported the output file name"):
        check_server_filename(name, "9")


def test_local_names_are_base_names_with_a_plain_extension():
    assert local_name(3, "face=a/b_age=+2", "9", "images", 0, "x_00001_.PNG") == "0003_face=a_b_age=+2_n9_0.png"
    assert local_name(3, "../..", "../9", "gifs", 1, "x.p/ng") == "0003_point_n9_gifs1.bin"
    assert local_name(0, "s", "9", "images", 0, "x.tar.gz;rm -rf") == "0000_s_n9_0.bin"


def test_hostile_output_names_fail_their_points_and_write_nothing_outside(servers, tmp_path):
    (fake,) = servers()
    fake.output_names = ["../../../x", "sub/dir"]
    events = []
    out = tmp_path / "deep" / "out"
    report = run_batch(WORKFLOW, seeds(4), [fake.url], out, progress=events.append, use_websocket=False, **FAST)
    first, second, *rest = report.points
    assert first.status == "failed" and second.status == "failed"
    assert "reported the output file name '../../../x', which is not a plain file name" in first.error
    assert "'sub/dir'" in second.error
    assert all(p.status == "done" for p in rest)
    assert "server_down" not in {e.event for e in events}  # a bad name is not an unreachable server
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(w.startswith("deep/out/") for w in written) and not (tmp_path / "x").exists()
    assert fake.requests["GET view"] == 2  # nothing was fetched for the two bad names
    assert_clear(first.error)


def test_a_prompt_comfyui_refuses_with_400_fails_that_point_only(servers, tmp_path):
    (fake,) = servers()
    spec = {"sweep": [{"node": "3", "input": "steps", "values": [1, "__bad400__", 3]}]}
    wf = copy.deepcopy(WORKFLOW)
    report = run_batch(wf, spec, [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    assert [p.status for p in report.points] == ["done", "failed", "done"]
    assert report.points[1].error.startswith("ComfyUI refused the prompt (HTTP 400): Prompt outputs failed validation")
    wf["30"] = {"class_type": "NotInstalledNode", "inputs": {}}
    report = run_batch(wf, seeds(2), [fake.url], tmp_path / "out2", use_websocket=False, **FAST)
    assert [p.error for p in report.points] == [
        "ComfyUI refused the prompt (HTTP 400): Node 'NotInstalledNode' not found"
    ] * 2
    assert "is it a ComfyUI server" not in report.summary()


def test_a_refused_face_upload_fails_those_points_not_the_batch(servers, tmp_path, face_dir):
    (fake,) = servers()
    fake.refuse_uploads = True
    spec = {"faces": {"folder": str(face_dir), "node": "Load face", "input": "image"}, **seeds(1)}
    report = run_batch(WORKFLOW, spec, [fake.url], tmp_path / "out", use_websocket=False, **FAST)
    assert [p.status for p in report.points] == ["failed", "failed"]
    error = report.points[0].error
    assert error.startswith(f"{fake.url} refused the upload of face alice.png into input/likeness_batch (HTTP 400:")
    assert "check the image and the spec's faces.subfolder" in error
    assert_clear(error)


def test_a_server_that_is_not_comfyui_stops_the_batch_with_that_question(tmp_path):
    class NotFound(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(
            LikenessError, match=r"answered unexpectedly \(GET .*/queue: HTTP 404.*is it a ComfyUI server"
        ):
            run_batch(WORKFLOW, seeds(1), [f"http://127.0.0.1:{httpd.server_address[1]}"], tmp_path / "o", **FAST)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_local_write_error_stops_the_batch_resumably_without_blaming_the_server(servers, tmp_path):
    (fake,) = servers()
    out = tmp_path / "out"
    blocker = out / "0000_seed=1_n9_0.png"
    blocker.mkdir(parents=True)  # a folder where the first image goes: writing it fails locally
    events = []
    with pytest.raises(LikenessError) as err:
        run_batch(WORKFLOW, seeds(2), [fake.url], out, progress=events.append, use_websocket=False, **FAST)
    assert str(err.value).startswith(f"cannot write {blocker}: Is a directory; check the free space and permissions")
    assert "run the same command again to resume" in str(err.value)
    assert "server_down" not in {e.event for e in events}
    blocker.rmdir()
    report = run_batch(WORKFLOW, seeds(2), [fake.url], out, use_websocket=False, **FAST)
    assert report.ok and sorted(fake.completions.values()) == [1, 1]  # resumed from the kept history, no rerun
    assert_clear(str(err.value))
