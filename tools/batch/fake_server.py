"""A simulated ComfyUI server for the batch client's tests and benchmark (no ComfyUI, no GPU).

``FakeComfy()`` listens on 127.0.0.1 only (a free port) and answers what the batch client uses, with
ComfyUI's answer shapes: ``POST``/``GET /prompt`` (client-chosen ``prompt_id``, 400 with ``error`` and
``node_errors``, 200 with ``node_errors``), ``GET``/``POST /queue``, ``GET /history/{id}``, ``GET /view``,
``POST /upload/image``, ``POST /interrupt``, ``GET /system_stats`` and a minimal ``/ws`` (server-to-client
text frames: ``execution_start``, ``progress``, ``executed``, ``execution_success``/``execution_error``,
``executing`` with ``node: null``). HTTP/1.1 keep-alive, like aiohttp.

One worker runs prompts one at a time; each takes ``exec_time`` seconds of sleeping, as a GPU would (the
worker uses no CPU while it "runs"). Like ComfyUI, a prompt's files are written while it executes and its
history entry is added after that; ``SaveImage`` names files ``<prefix>_<counter:05>_.png`` in the
prefix's subfolder, the counter continuing the highest one on "disk". Output files persist across
restarts (``files``), temp files (``PreviewImage``) are deleted on restart as ComfyUI does.

Hooks (for tests; all optional):

* ``kill()`` stops the server (connections refused; queue and history lost, like a killed process);
  ``restart()`` listens again on the same port. ``kill_when_busy()`` kills while a prompt runs.
* ``kill_after``: ``("files", n)`` kills right after the n-th prompt wrote its files, before its history
  entry exists; ``("history", n)`` right after the n-th history entry was added, before anyone read it.
  ``("partial", n)``: the n-th prompt writes a truncated PNG, then the server dies. ``killed`` is set then.
  While a kill is planned, a prompt finishes only after a client read every earlier history entry.
* ``paused`` holds the worker; ``fail_5xx`` / ``fail_view`` make the next N ``POST /prompt`` /
  ``GET /view`` answer 500 / 503; ``output_names`` replaces the next file names the history reports;
  ``refuse_uploads`` answers every upload with ComfyUI's bare 400.
* Input values ``"__bad400__"`` / ``"__bad200__"`` fail validation (400 / 200 with ``node_errors``),
  ``"__crash__"`` makes execution fail. A node whose class contains ``IdentityScore`` reports
  ``identity cosine: <seed/100>`` (the KSampler's seed).
* ``POST /interrupt`` stops the running prompt at its next step (history status ``error`` with
  ``execution_interrupted``; the prompt id lands in ``interrupts``, not in ``completions``).
* Counters survive restarts: ``submissions`` and ``completions`` (prompts that ran to the end, with
  success or an execution error) per prompt id, ``max_depth`` (queue
  length including the running prompt), ``requests`` per ``METHOD path``, ``peers`` (one client address
  per TCP connection).
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeComfy", "PNG_SIGNATURE", "PNG_END", "fake_png"]

KNOWN = {
    "KSampler",
    "LoadImage",
    "SaveImage",
    "PreviewImage",
    "CheckpointLoaderSimple",
    "LikenessEdit",
    "Likeness_IdentityScore",
    "EmptyLatentImage",
    "VAEDecode",
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def fake_png(payload: bytes) -> bytes:
    """Bytes that start and end like a PNG (signature ... IEND chunk) around ``payload``."""
    return PNG_SIGNATURE + payload + PNG_END


def _ws_frame(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes([0x81, n]) + data
    if n < 65536:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + data
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + data


class FakeComfy:
    """One simulated server; see the module docstring. ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, exec_time: float = 0.03, steps: int = 3):
        self.exec_time, self.steps = exec_time, steps
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.submissions: Counter[str] = Counter()
        self.interrupts: set[str] = set()
        self.completions: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.peers: set[tuple[str, int]] = set()  # client (host, port) pairs: one per TCP connection
        self.refuse_uploads = False
        self.max_depth = 0
        self.fail_5xx = 0
        self.fail_view = 0
        self.paused = False
        self.kill_after: tuple[str, int] | None = None
        self.killed = threading.Event()
        self.output_names: list[str] = []
        self.uploads: dict[str, bytes] = {"example.png": b"example"}
        self.files: dict[tuple[str, str, str], bytes] = {}  # (subfolder, filename, type) -> bytes
        self.port = 0
        self.alive = False
        self.incarnation = 0
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.queue: list[tuple[int, str, dict, dict]] = []
        self.running: tuple[int, str, dict, dict] | None = None
        self.history: dict[str, dict] = {}
        self.observed: set[str] = set()
        self.number = 0
        self.sockets: list[tuple[str, socket.socket]] = []
        self.files = {k: v for k, v in self.files.items() if k[2] != "temp"}  # ComfyUI empties temp on start
        self.stop = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.incarnation += 1
        self.alive = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        threading.Thread(target=self._work, args=(self.stop,), daemon=True).start()

    def kill(self) -> None:
        """Die like a killed process: open sockets reset, queue and history gone (files stay)."""
        with self.lock:
            if not self.alive:
                return
            self.stop.set()
            self.alive = False
            self.wake.notify_all()
            for _, sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            httpd = self.httpd
        httpd.shutdown()
        httpd.server_close()
        self.killed.set()

    def restart(self) -> None:
        self._start()

    def kill_when_busy(self, timeout: float = 10.0) -> str:
        """Kill while a prompt runs and all finished ones were observed; returns the running prompt id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.running is not None and set(self.history) <= self.observed:
                    running = self.running[1]
                    self.kill()
                    return running
            time.sleep(0.002)
        raise TimeoutError("the fake server never got busy")

    def idle(self) -> bool:
        with self.lock:
            return self.running is None and not self.queue

    # ---- worker -----------------------------------------------------------------------------------------
    def _send(self, client_id: str, kind: str, data: dict) -> None:
        text = json.dumps({"type": kind, "data": data})
        for cid, sock in list(self.sockets):
            if cid == client_id:
                try:
                    sock.sendall(_ws_frame(text))
                except OSError:
                    pass

    def _next(self, stop: threading.Event) -> tuple[int, str, dict, dict] | None:
        with self.wake:
            while not stop.is_set() and (self.paused or not self.queue) and self.running is None:
                self.wake.wait(0.05)
            if stop.is_set():
                return None
            if self.running is None:
                self.running = self.queue.pop(0)
            return self.running

    def _work(self, stop: threading.Event) -> None:
        while True:
            item = self._next(stop)
            if item is None:
                return
            number, pid, prompt, extra = item
            cid = extra.get("client_id", "")
            start = int(time.time() * 1000)
            self._send(cid, "execution_start", {"prompt_id": pid, "timestamp": start})
            for step in range(1, self.steps + 1):
                if stop.wait(self.exec_time / self.steps):
                    return  # killed mid-run: never completes
                if pid in self.interrupts:
                    break
                self._send(cid, "progress", {"value": step, "max": self.steps, "node": "3", "prompt_id": pid})
            if self.kill_after is not None:
                self._wait_observed(stop)
            with self.lock:
                if stop.is_set():
                    return
                if pid in self.interrupts:
                    end = ["execution_interrupted", {"prompt_id": pid, "node_id": "3", "node_type": "KSampler"}]
                    self._record(number, pid, prompt, {}, start, end)
                    self.running = None
                    self._send(cid, end[0], end[1])
                    continue
                n = sum(self.completions.values()) + 1
                mode = self.kill_after[0] if self.kill_after and self.kill_after[1] == n else None
                if mode:
                    self.kill_after = None  # one shot
                outputs, end = self._execute(pid, prompt, start, truncate=mode == "partial")
                if mode in ("files", "partial"):
                    self.kill()
                    return
                self._record(number, pid, prompt, outputs, start, end)
                self.running = None
                if mode == "history":
                    self.kill()
                    return
            for nid, out in outputs.items():
                self._send(cid, "executed", {"node": nid, "output": out, "prompt_id": pid})
            self._send(cid, end[0], end[1])
            self._send(cid, "executing", {"node": None, "prompt_id": pid})

    def _wait_observed(self, stop: threading.Event, timeout: float = 5.0) -> None:
        """Before a planned kill: wait until a client read every earlier history entry (determinism)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                if set(self.history) <= self.observed:
                    return
            time.sleep(0.002)

    def _save(self, prefix: str, kind: str, data: bytes) -> dict[str, str]:
        """Store ``data`` like ComfyUI's ``get_save_image_path``: ``<prefix>_<counter:05>_.png``."""
        norm = posixpath.normpath(prefix.replace("\\", "/"))
        sub, base = posixpath.dirname(norm), posixpath.basename(norm)
        if kind == "temp":
            sub, base = "", "ComfyUI_temp_" + hashlib.sha1(data).hexdigest()[:5]  # noqa: S324 - a name
        pattern = re.compile(re.escape(base) + r"_(\d+)_\.png$")
        used = [int(m.group(1)) for s, f, t in self.files if s == sub and t == kind and (m := pattern.match(f))]
        name = f"{base}_{max(used, default=0) + 1:05d}_.png"
        self.files[(sub, name, kind)] = data
        return {"filename": name, "subfolder": sub, "type": kind}

    def _execute(self, pid: str, prompt: dict, start: int, truncate: bool) -> tuple[dict, list]:
        """Run the prompt's output nodes: write files, return (history outputs, end message)."""
        outputs: dict[str, dict] = {}
        crash = next((nid for nid, n in prompt.items() if "__crash__" in n["inputs"].values()), None)
        seed = next((n["inputs"].get("seed") for n in prompt.values() if n["class_type"] == "KSampler"), 0)
        now = int(time.time() * 1000)
        if crash is not None:
            return outputs, [
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": crash,
                    "node_type": prompt[crash]["class_type"],
                    "exception_type": "RuntimeError",
                    "exception_message": "boom",
                    "traceback": [],
                    "executed": [],
                    "timestamp": now,
                },
            ]
        for nid, node in sorted(prompt.items()):
            ct = node["class_type"]
            if ct in ("SaveImage", "PreviewImage"):
                data = fake_png(f"{pid}:{nid}".encode())
                record = self._save(
                    str(node["inputs"].get("filename_prefix", "ComfyUI")),
                    "output" if ct == "SaveImage" else "temp",
                    data[: len(data) // 2] if truncate else data,
                )
                if self.output_names:
                    record["filename"] = self.output_names.pop(0)
                outputs[nid] = {"images": [record]}
            elif "IdentityScore" in ct:
                outputs[nid] = {"text": [f"identity cosine: {seed / 100:.4f}"]}
        return outputs, ["execution_success", {"prompt_id": pid, "timestamp": now}]

    def _record(self, number: int, pid: str, prompt: dict, outputs: dict, start: int, end: list) -> None:
        ok = end[0] == "execution_success"
        messages: list = [["execution_start", {"prompt_id": pid, "timestamp": start}], end]
        self.history[pid] = {
            "prompt": [number, pid, prompt, {}, list(outputs)],
            "outputs": outputs,
            "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
            "meta": {},
        }
        if end[0] != "execution_interrupted":
            self.completions[pid] += 1

    # ---- request handling (called by _Handler under self.lock) ----------------------------------------------
    def post_prompt(self, body: dict) -> tuple[int, dict]:
        pid = body.get("prompt_id")
        if self.fail_5xx > 0:
            self.fail_5xx -= 1
            return 500, {"error": "internal"}
        if not (isinstance(pid, str) and UUID.match(pid)):
            return 400, _error("invalid_prompt_id", "prompt_id must be a valid UUID")
        prompt = body["prompt"]
        missing = sorted({n["class_type"] for n in prompt.values()} - KNOWN)
        if missing:
            return 400, _error("missing_node_type", f"Node '{missing[0]}' not found")
        node_errors = {}
        for nid, node in prompt.items():
            for name, value in node["inputs"].items():
                bad = value in ("__bad400__", "__bad200__") or (
                    node["class_type"] == "LoadImage" and name == "image" and value not in self.uploads
                )
                if bad:
                    node_errors[nid] = {
                        "errors": [
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: {value!r} not in list",
                            }
                        ],
                        "dependent_outputs": [],
                        "class_type": node["class_type"],
                    }
        if node_errors and "__bad200__" not in json.dumps(prompt):
            return 400, {
                **_error("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                "node_errors": node_errors,
            }
        self.submissions[pid] += 1
        self.number += 1
        self.queue.append((self.number, pid, prompt, {"client_id": body.get("client_id", "")}))
        self.max_depth = max(self.max_depth, len(self.queue) + (self.running is not None))
        self.wake.notify_all()
        return 200, {"prompt_id": pid, "number": self.number, "node_errors": node_errors}

    def queue_json(self) -> dict:
        def row(item):
            return [item[0], item[1], item[2], item[3], []]

        return {
            "queue_running": [row(self.running)] if self.running else [],
            "queue_pending": [row(i) for i in self.queue],
        }

    def upload(self, subfolder: str, name: str, data: bytes) -> tuple[int, Any]:
        """``POST /upload/image``; a subfolder or name that leaves the input folder gets ComfyUI's bare 400."""
        path = posixpath.normpath(posixpath.join("input", subfolder, name))
        if not name or not path.startswith("input/") or self.refuse_uploads:
            return 400, None
        self.uploads[f"{subfolder}/{name}" if subfolder else name] = data
        return 200, {"name": name, "subfolder": subfolder, "type": "input"}


def _error(kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message, "details": "", "extra_info": {}}, "node_errors": {}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeComfy
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp
    disable_nagle_algorithm = True  # TCP_NODELAY, as aiohttp: no 40 ms delayed-ACK stall per answer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, code: int, data) -> None:
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(code)
        if data is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _dead(self) -> bool:
        """A request on a killed incarnation gets no answer (the client sees a reset)."""
        if self.server is not self.fake.httpd or not self.fake.alive:
            self.close_connection = True
            return True
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        if self._dead():
            return None
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ws":
            return self._websocket(urllib.parse.parse_qs(url.query).get("clientId", [""])[0])
        with fake.lock:
            if self._dead():  # killed while this request waited
                return None
            fake.requests[f"GET {url.path.split('/')[1]}"] += 1
            fake.peers.add(self.client_address)
            if url.path == "/prompt":
                return self._json(200, {"exec_info": {"queue_remaining": len(fake.queue) + (fake.running is not None)}})
            if url.path == "/queue":
                return self._json(200, fake.queue_json())
            if url.path == "/system_stats":
                return self._json(200, {"system": {}, "devices": []})
            if url.path.startswith("/history/"):
                pid = url.path.split("/", 2)[2]
                if pid in fake.history:
                    fake.observed.add(pid)
                    return self._json(200, {pid: fake.history[pid]})
                return self._json(200, {})
            if url.path == "/view" and fake.fail_view > 0:
                fake.fail_view -= 1
                return self._json(503, {})
            if url.path == "/view":
                q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
                data = fake.files.get((q.get("subfolder", ""), q.get("filename", ""), q.get("type", "output")))
                if data is None:
                    return self._json(404, None)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
        return self._json(404, None)

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        raw = self._body()
        if self._dead():
            return None
        if self.path == "/upload/image":
            msg = BytesParser(policy=default_policy).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
            )
            form = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
            sub = form["subfolder"].get_content().strip() if "subfolder" in form else ""
            with fake.lock:
                code, answer = fake.upload(sub, form["image"].get_filename(), form["image"].get_payload(decode=True))
            return self._json(code, answer)
        body = json.loads(raw or b"{}")
        with fake.lock:
            if self._dead():
                return None
            fake.requests[f"POST {self.path.split('/')[1]}"] += 1
            fake.peers.add(self.client_address)
            if self.path == "/prompt":
                code, answer = fake.post_prompt(body)
                return self._json(code, answer)
            if self.path == "/queue":
                ids = set(body.get("delete", []))
                fake.queue = [i for i in fake.queue if i[1] not in ids]
                return self._json(200, {})
            if self.path == "/interrupt":
                target = body.get("prompt_id")
                if fake.running is not None and target in (None, fake.running[1]):
                    fake.interrupts.add(fake.running[1])
                return self._json(200, {})
        return self._json(404, None)

    def _websocket(self, client_id: str) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        with self.fake.lock:
            if not self.fake.alive:
                return
            self.fake.sockets.append((client_id, sock))
        try:
            while True:
                data = sock.recv(1024)
                if not data or data[0] & 0x0F == 0x8:  # EOF or close frame
                    break
        except OSError:
            pass
        with self.fake.lock:
            self.fake.sockets = [s for s in self.fake.sockets if s[1] is not sock]
        self.close_connection = True
