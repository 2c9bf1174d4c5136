"""A small client for ComfyUI's HTTP API (stdlib only; no ComfyUI import).

Used by the batch queue and by the tests that drive a real server. Follows
ComfyUI's rules (comfyui.md §5.3): ``POST /prompt`` answers 200 even when some
outputs failed validation, so a non-empty ``node_errors`` is a failure; the
history is the source of truth for completion.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = ["ComfyClient", "PromptRejected", "PromptFailed", "PromptResult"]

logger = logging.getLogger(__name__)


class PromptRejected(LikenessError):
    """The server refused a prompt (HTTP 400, or 200 with ``node_errors``)."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


class PromptFailed(LikenessError):
    """A queued prompt finished with an error or was interrupted."""


@dataclass
class PromptResult:
    """The history entry of a finished prompt."""

    prompt_id: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)

    def images(self) -> list[dict[str, str]]:
        """Every image record (``filename``, ``subfolder``, ``type``) in node-id order."""
        found: list[dict[str, str]] = []
        for node_id in sorted(self.outputs, key=lambda n: (len(n), n)):
            found.extend(self.outputs[node_id].get("images", []))
        return found

    def error_message(self) -> str:
        for kind, data in self.messages:
            if kind == "execution_error":
                return (
                    f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                    f"{data.get('exception_type')}: {data.get('exception_message')}"
                )
            if kind == "execution_interrupted":
                return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
        return f"status {self.status}"


def describe_node_errors(node_errors: dict[str, Any]) -> str:
    """One line per failing node: id, class and ComfyUI's error texts."""
    lines = []
    for node_id, info in node_errors.items():
        errs = "; ".join(f"{e.get('message')}: {e.get('details')}" for e in info.get("errors", []))
        lines.append(f"node {node_id} ({info.get('class_type')}): {errs}")
    return "\n".join(lines)


class ComfyClient:
    """Talks to one ComfyUI server, e.g. ``ComfyClient("http://127.0.0.1:8188")``."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-given server URL
            payload = resp.read()
        return payload if raw else (json.loads(payload) if payload else None)

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def object_info(self) -> dict[str, Any]:
        return self.get("/object_info")

    def queue_remaining(self) -> int:
        return int(self.get("/prompt")["exec_info"]["queue_remaining"])

    def queue(self, prompt: dict[str, Any], prompt_id: str | None = None, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt; returns its id.

        Raises :class:`PromptRejected` on HTTP 400 or a non-empty ``node_errors``; other HTTP errors
        (5xx) propagate as ``urllib.error.HTTPError`` so that a caller can retry them.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            answer = self.post("/prompt", body)
        except urllib.error.HTTPError as exc:
            if exc.code != 400:
                raise  # 5xx and others are not a verdict on the prompt: the caller may retry
            body_bytes = exc.read() or b"{}"
            try:
                details = json.loads(body_bytes)
            except json.JSONDecodeError:
                details = {"error": {"message": body_bytes.decode("utf-8", "replace")[:500]}}
            error = details.get("error", {})
            if not isinstance(error, dict):
                error = {"message": str(error)}
            raise PromptRejected(
                f"ComfyUI refused the prompt: {error.get('message')} {error.get('details', '')}\n"
                + describe_node_errors(details.get("node_errors", {})),
                details,
            ) from exc
        if answer.get("node_errors"):
            raise PromptRejected(
                "ComfyUI queued only part of the prompt:\n" + describe_node_errors(answer["node_errors"]), answer
            )
        return answer.get("prompt_id", prompt_id)

    def history(self, prompt_id: str) -> PromptResult | None:
        entry = self.get(f"/history/{prompt_id}").get(prompt_id)
        if not entry:
            return None
        status = entry.get("status", {})
        if not status.get("completed") and status.get("status_str") != "error":
            return None
        return PromptResult(
            prompt_id, status.get("status_str", "unknown"), entry.get("outputs", {}), status.get("messages", [])
        )

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.5) -> PromptResult:
        """Poll the history until the prompt finishes. Raises :class:`PromptFailed` on error or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.history(prompt_id)
            if result is not None:
                if result.status != "success":
                    raise PromptFailed(f"prompt {prompt_id} failed: {result.error_message()}")
                return result
            time.sleep(poll)
        raise PromptFailed(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict[str, Any], timeout: float = 600.0) -> PromptResult:
        return self.wait(self.queue(prompt), timeout=timeout)

    def view(self, image: dict[str, str]) -> bytes:
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request("GET", f"/view?{query}", raw=True)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """The raw ``/history/{id}`` entry (``prompt``, ``outputs``, ``status``), or None when unknown."""
        return self.get(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """``GET /queue`` as (running prompt ids, pending prompt ids), pending in execution order."""
        answer = self.get("/queue")
        running = [item[1] for item in answer.get("queue_running", [])]
        pending = [item[1] for item in sorted(answer.get("queue_pending", []), key=lambda item: item[0])]
        return running, pending

    def delete_queued(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts from the queue (``POST /queue {"delete": [...]}``); running ones stay."""
        self.post("/queue", {"delete": list(prompt_ids)})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only when it is ``prompt_id``, if given)."""
        self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def upload_image(
        self, path: str | Path, subfolder: str = "", overwrite: bool = True, name: str | None = None
    ) -> str:
        """Upload a local image into the server's ``input`` folder (``POST /upload/image``) as ``name``
        (default: the file's name).

        Returns the value a ``LoadImage`` ``image`` input takes: ``"subfolder/name"`` (or ``"name"``).
        """
        path = Path(path)
        boundary = "----likeness" + uuid.uuid4().hex
        fields = {"subfolder": subfolder, "type": "input", "overwrite": "true" if overwrite else "false"}
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        ]
        ctype = mimetypes.guess_type(name or path.name)[0] or "application/octet-stream"
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name or path.name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        body = b"".join(parts) + header + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base_url + "/upload/image", data=body, method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-given server URL
            answer = json.loads(resp.read())
        name, sub = answer["name"], answer.get("subfolder") or ""
        return f"{sub}/{name}" if sub else name
