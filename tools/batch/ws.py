"""Follow ComfyUI's ``/ws?clientId=`` event stream in a background thread (optional ``websocket-client``).

The batch runner uses these events only to react faster and to show node progress; ``/history/{id}`` stays
the source of truth (messages are lost while a socket reconnects). Messages are handed to a ``sink``
callable from the follower thread; the runner puts them on a queue and handles them in its own thread.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = ["websocket_available", "WsFollower"]

logger = logging.getLogger(__name__)


def websocket_available() -> bool:
    """True when the optional ``websocket-client`` package is installed."""
    return importlib.util.find_spec("websocket") is not None


def ws_url(base_url: str, client_id: str) -> str:
    """``http://host:port`` -> ``ws://host:port/ws?clientId=<id>`` (https -> wss)."""
    parts = urllib.parse.urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode({"clientId": client_id}), ""))


class WsFollower:
    """Keeps one websocket open to a server (reconnecting every ``retry`` s) and forwards JSON messages.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8188``.
        client_id: the batch's ``client_id`` (prompts queued with it report to this socket).
        sink: called as ``sink(base_url, message)`` for every JSON text frame, from the follower thread.
        retry: seconds between connection attempts.
    """

    def __init__(self, base_url: str, client_id: str, sink: Callable[[str, dict[str, Any]], None], retry: float = 2.0):
        self.base_url = base_url
        self.url = ws_url(base_url, client_id)
        self.sink = sink
        self.retry = retry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"likeness-ws-{base_url}", daemon=True)
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0, wait: bool = True) -> None:
        """Ask the thread to end; with ``wait``, join it (up to ``timeout`` s). Signal several, then join."""
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        import websocket  # optional dependency, checked by websocket_available()

        while not self._stop.is_set():
            try:
                sock = websocket.create_connection(self.url, timeout=5)
            except (websocket.WebSocketException, OSError) as exc:
                self._failures += 1
                log = logger.info if self._failures == 1 else logger.debug
                log(
                    "websocket %s unavailable (%s); relying on /history polling, retrying every %.0f s",
                    self.url,
                    exc,
                    self.retry,
                )
                self._stop.wait(self.retry)
                continue
            self._failures = 0
            logger.debug("websocket connected: %s", self.url)
            try:
                self._pump(sock, websocket)
            finally:
                sock.close()

    def _pump(self, sock: Any, websocket: Any) -> None:
        sock.settimeout(0.1)  # how soon stop() is noticed
        while not self._stop.is_set():
            try:
                frame = sock.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                logger.debug("websocket %s closed: %s", self.url, exc)
                return
            if not isinstance(frame, str) or not frame:
                continue  # binary frames are latent previews
            try:
                message = json.loads(frame)
            except json.JSONDecodeError:
                logger.debug("websocket %s: ignoring non-JSON frame %r", self.url, frame[:80])
                continue
            if isinstance(message, dict):
                self.sink(self.base_url, message)
