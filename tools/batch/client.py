"""A small client for ComfyUI's HTTP API on a ``requests.Session`` (no ComfyUI import).

Used by the batch queue and by the tests that drive a real server. One session per server reuses its
connection (keep-alive) across the many small requests a batch makes. It follows ComfyUI's rules:
``POST /prompt`` answers 200 even when some outputs failed validation, so a non-empty ``node_errors`` is
a failure; the history is the source of truth for completion.

Errors: :class:`ServerUnavailable` (no answer, a timeout, a truncated answer or HTTP 5xx/408/429; worth
retrying later; a ``ConnectionError``), :class:`ServerAnswerError` (an answer that is not what ComfyUI
gives: HTTP 4xx, or not JSON), :class:`PromptRejected` (HTTP 400 or ``node_errors`` on ``POST /prompt``),
:class:`PromptFailed` (a prompt that ran and failed). All are :class:`LikenessError`.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

try:
    import requests
except ImportError as _exc:  # ComfyUI's own environment has it; a bare Python may not
    raise LikenessError(
        "the batch client needs the requests package: pip install requests (or run it with ComfyUI's Python)"
    ) from _exc

__all__ = [
    "ComfyClient",
    "ServerUnavailable",
    "ServerAnswerError",
    "PromptRejected",
    "PromptFailed",
    "PromptResult",
    "is_transient",
    "describe_node_errors",
]

logger = logging.getLogger(__name__)

MAX_LISTED = 20  # errors list at most this many items, then "... and N more"


class ServerUnavailable(LikenessError, ConnectionError):
    """No usable answer (refused, reset, timeout, truncated) or HTTP 5xx/408/429: the server may come back."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerAnswerError(LikenessError):
    """The server answered, but not as ComfyUI answers this request: HTTP 4xx, or a body that is not JSON.

    ``status`` is the HTTP status, ``server_message`` ComfyUI's own text (its JSON ``error.message`` and
    ``details``, or the start of the body), ``body`` the parsed JSON answer when there was one.
    """

    def __init__(self, message: str, status: int, server_message: str = "", body: Any = None):
        super().__init__(message)
        self.status, self.server_message, self.body = status, server_message, body


class PromptRejected(LikenessError):
    """The server refused a prompt (HTTP 400, or 200 with ``node_errors``)."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


class PromptFailed(LikenessError):
    """A queued prompt finished with an error or was interrupted."""


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying on the same server later (:class:`ServerUnavailable`)."""
    return isinstance(exc, ServerUnavailable)


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
    """One line per failing node (at most ``MAX_LISTED``): id, class and ComfyUI's error texts."""
    if not isinstance(node_errors, dict):
        return ""
    lines = []
    for node_id, info in list(node_errors.items())[:MAX_LISTED]:
        info = info if isinstance(info, dict) else {}
        errs = "; ".join(
            f"{e.get('message')}: {e.get('details')}" if e.get("details") else str(e.get("message"))
            for e in info.get("errors", [])[:MAX_LISTED]
            if isinstance(e, dict)
        )
        lines.append(f"node {node_id} ({info.get('class_type')}): {errs}")
    if len(node_errors) > MAX_LISTED:
        lines.append(f"... and {len(node_errors) - MAX_LISTED} more nodes")
    return "\n".join(lines)


def _server_message(body: Any, text: str) -> str:
    """ComfyUI's error text from an answer: ``error.message`` + ``details``, else the body's start."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            parts = [str(error.get(k)) for k in ("message", "details") if error.get(k)]
            if parts:
                return ": ".join(parts)
        elif error:
            return str(error)
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else "an empty answer"


class ComfyClient:
    """Talks to one ComfyUI server, e.g. ``ComfyClient("http://127.0.0.1:8188")``.

    Args:
        base_url: ``http(s)://host:port`` (a path prefix is kept, for servers behind a proxy).
        timeout: seconds to connect and seconds to wait for each answer.
    """

    def __init__(self, base_url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LikenessError(
                f"server URL {base_url!r} is not a URL with http:// or https://; use e.g. http://127.0.0.1:8188"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        """One request; the JSON answer (None when empty), or the bytes with ``raw=True``.

        ``kwargs`` go to ``requests`` (``json``, ``params``, ``files``, ``data``). Raises
        :class:`ServerUnavailable` or :class:`ServerAnswerError` (see the module docstring).
        """
        url = self.base_url + path
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise ServerUnavailable(f"{method} {url}: no answer ({_reason(exc)})") from exc
        except requests.RequestException as exc:
            raise ServerAnswerError(f"{method} {url}: {exc}", 0) from exc
        status = resp.status_code
        if status >= 500 or status in (408, 429):
            raise ServerUnavailable(f"{method} {url}: HTTP {status} ({_server_message(None, resp.text)})", status)
        body: Any = None
        if not raw or status >= 400:
            try:
                body = resp.json() if resp.content else None
            except ValueError:
                if status < 400:
                    raise ServerAnswerError(
                        f"{method} {url} answered something that is not JSON "
                        f"({_server_message(None, resp.text)}); is it a ComfyUI server?",
                        status,
                        _server_message(None, resp.text),
                    ) from None
        if status >= 400:
            message = _server_message(body, resp.text)
            raise ServerAnswerError(f"{method} {url}: HTTP {status}: {message}", status, message, body)
        return resp.content if raw else body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON. NaN and infinities are sent as Python's ``json`` writes them (``NaN``), which
        ComfyUI reads back: the node that gets such a value refuses it with its own message, instead of the
        client failing before the server sees the prompt."""
        data = json.dumps(body, allow_nan=True)
        return self.request("POST", path, data=data, headers={"Content-Type": "application/json"})

    def object_info(self) -> dict[str, Any]:
        return self.get("/object_info")

    def queue_remaining(self) -> int:
        return int(self.get("/prompt")["exec_info"]["queue_remaining"])

    def queue(self, prompt: dict[str, Any], prompt_id: str | None = None, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt; returns its id.

        Raises :class:`PromptRejected` on HTTP 400 or a non-empty ``node_errors`` (with ComfyUI's message
        and one line per failing node), :class:`ServerUnavailable` when it may be retried, and
        :class:`ServerAnswerError` for other answers.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            answer = self.post("/prompt", body)
        except ServerAnswerError as exc:
            if exc.status != 400:
                raise
            details = exc.body if isinstance(exc.body, dict) else {"error": {"message": exc.server_message}}
            nodes = describe_node_errors(details.get("node_errors", {}))
            raise PromptRejected(
                f"ComfyUI refused the prompt (HTTP 400): {exc.server_message}" + (f"\n{nodes}" if nodes else ""),
                details,
            ) from exc
        if not isinstance(answer, dict):
            raise ServerAnswerError(
                f"POST {self.base_url}/prompt answered {answer!r}, not ComfyUI's {{prompt_id, number, node_errors}}",
                200,
            )
        if answer.get("node_errors"):
            raise PromptRejected(
                "ComfyUI queued only part of the prompt:\n" + describe_node_errors(answer["node_errors"]), answer
            )
        return answer.get("prompt_id", prompt_id)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """The raw ``/history/{id}`` entry (``prompt``, ``outputs``, ``status``), or None when unknown."""
        answer = self.get(f"/history/{urllib.parse.quote(prompt_id)}")
        if not isinstance(answer, dict):
            raise ServerAnswerError(f"GET {self.base_url}/history/{prompt_id} answered {answer!r}", 200)
        return answer.get(prompt_id)

    def history(self, prompt_id: str) -> PromptResult | None:
        """The finished prompt's result, or None while it is unknown, queued or running."""
        entry = self.history_entry(prompt_id)
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
        """The bytes of one output file record (``filename``, ``subfolder``, ``type``) via ``GET /view``."""
        params = {k: image.get(k, "") for k in ("filename", "subfolder", "type")}
        return self.request("GET", "/view", raw=True, params=params)

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """``GET /queue`` as (running prompt ids, pending prompt ids), pending in execution order."""
        answer = self.get("/queue")
        if not isinstance(answer, dict):
            raise ServerAnswerError(f"GET {self.base_url}/queue answered {answer!r}; is it a ComfyUI server?", 200)
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
        """Upload a local image into the server's ``input`` folder (``POST /upload/image``, multipart) as
        ``name`` (default: the file's name).

        Returns the value a ``LoadImage`` ``image`` input takes: ``"subfolder/name"`` (or ``"name"``).
        """
        path = Path(path)
        name = name or path.name
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = {"subfolder": subfolder, "type": "input", "overwrite": "true" if overwrite else "false"}
        with path.open("rb") as fh:
            answer = self.request("POST", "/upload/image", files={"image": (name, fh, ctype)}, data=fields)
        if not (isinstance(answer, dict) and isinstance(answer.get("name"), str)):
            raise ServerAnswerError(f"POST {self.base_url}/upload/image answered {answer!r}, not {{name, ...}}", 200)
        stored, sub = answer["name"], answer.get("subfolder") or ""
        return f"{sub}/{stored}" if sub else stored


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, e.g. 'Connection refused' instead of a urllib3 repr."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc)
    return text.rsplit("] ", 1)[-1] if "] " in text else text or type(exc).__name__
