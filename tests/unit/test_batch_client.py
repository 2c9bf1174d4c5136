"""The ComfyUI client on requests: one kept-alive connection, multipart upload, and errors that say which."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import batch_fixtures  # tests/unit is on sys.path
import pytest
from batch_fixtures import assert_clear

from likeness.models.errors import LikenessError
from likeness.tools.batch.client import (
    ComfyClient,
    PromptRejected,
    ServerAnswerError,
    ServerUnavailable,
    describe_node_errors,
    is_transient,
)

servers = batch_fixtures.servers  # a pytest fixture


class _Html(BaseHTTPRequestHandler):
    """Not ComfyUI: a web page for every GET, 404 for every POST."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = b"<html><body>It works!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def html_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_session_reuses_one_connection(servers):
    (fake,) = servers()
    with ComfyClient(fake.url) as client:
        for _ in range(15):
            assert client.queue_ids() == ([], [])
            assert client.history_entry("00000000-0000-4000-8000-000000000000") is None
        assert client.queue_remaining() == 0
    assert fake.requests["GET queue"] == 15 and fake.requests["GET history"] == 15
    assert len(fake.peers) == 1  # 31 requests, one TCP connection


def test_multipart_upload_and_a_refused_upload(servers, tmp_path):
    (fake,) = servers()
    face = tmp_path / "face one.png"
    face.write_bytes(b"\x89PNG fake bytes \x00\xff")
    client = ComfyClient(fake.url)
    assert client.upload_image(face, subfolder="likeness_batch", name="face_ab12.png") == "likeness_batch/face_ab12.png"
    assert fake.uploads["likeness_batch/face_ab12.png"] == face.read_bytes()
    assert client.upload_image(face) == "face one.png" and fake.uploads["face one.png"] == face.read_bytes()
    with pytest.raises(ServerAnswerError) as err:
        client.upload_image(face, subfolder="../outside")
    assert err.value.status == 400 and str(err.value).endswith("/upload/image: HTTP 400: an empty answer")
    assert not is_transient(err.value)


def test_unreachable_and_5xx_are_transient_with_the_reason(servers):
    client = ComfyClient(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    with pytest.raises(ServerUnavailable) as err:
        client.queue_ids()
    assert isinstance(err.value, ConnectionError) and is_transient(err.value)
    assert "no answer (" in str(err.value) and "refused" in str(err.value).lower()
    (fake,) = servers()
    fake.fail_5xx = 1
    with pytest.raises(ServerUnavailable) as err:
        ComfyClient(fake.url).queue({"1": {"class_type": "KSampler", "inputs": {}}})
    assert err.value.status == 500 and "HTTP 500" in str(err.value)


def test_comfyui_400_answers_become_prompt_rejections_with_comfyuis_text(servers):
    (fake,) = servers()
    client = ComfyClient(fake.url)
    with pytest.raises(PromptRejected) as err:
        client.queue({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert str(err.value) == "ComfyUI refused the prompt (HTTP 400): Node 'NoSuchNode' not found"
    assert err.value.details["error"]["type"] == "missing_node_type"
    with pytest.raises(PromptRejected) as err:
        client.queue({"1": {"class_type": "KSampler", "inputs": {"seed": "__bad400__"}}})
    assert str(err.value).splitlines() == [
        "ComfyUI refused the prompt (HTTP 400): Prompt outputs failed validation",
        "node 1 (KSampler): Value not in list: seed: '__bad400__' not in list",
    ]
    assert_clear(str(err.value))


def test_a_server_that_is_not_comfyui_is_named_as_such(html_server):
    client = ComfyClient(html_server)
    with pytest.raises(ServerAnswerError) as err:
        client.queue_ids()
    assert "(<html><body>It works!</body></html>)" in str(err.value)  # what it answered, quoted
    assert "answered something that is not JSON" in str(err.value) and "is it a ComfyUI server?" in str(err.value)
    with pytest.raises(ServerAnswerError) as err:
        client.queue({"1": {"class_type": "KSampler", "inputs": {}}})
    assert err.value.status == 404
    with pytest.raises(LikenessError, match="is not a URL with http:// or https://; use e.g. http://127.0.0.1:8188"):
        ComfyClient("127.0.0.1:8188")


def test_node_error_lists_are_bounded():
    errors = {
        str(i): {"class_type": "KSampler", "errors": [{"message": "Required input is missing", "details": "seed"}]}
        for i in range(30)
    }
    text = describe_node_errors(errors)
    assert len(text.splitlines()) == 21 and text.endswith("... and 10 more nodes")
    assert "node 0 (KSampler): Required input is missing: seed" in text
    assert_clear(text)
