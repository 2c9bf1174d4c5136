"""HTTP routes of the pack on ComfyUI's server (also under ``/api``): the attribute picker and the live preview.

* ``GET /likeness/directions``: the direction sets found, each attribute's name, default rows, recommended
  range and licence (``models.preview.live.directions_payload``).
* ``GET /likeness/sources``: the W+ outputs kept from this session's Invert Face / Load W+ runs, and the W+
  files in the model folders.
* ``POST /likeness/preview``: ``{source: {node?, file?}, index?, e4e?, direction_set?, edits: [{attribute,
  strength, rows?}], ganspace_mode?, size?, client_id?}`` -> ``image/png``. One preview runs at a time; a newer
  request from the same client supersedes the waiting one (answered 409). Errors are JSON ``{"error": message}``
  with a 4xx status.
* ``POST /likeness/preview/cancel``: ``{client_id}`` drops that client's waiting previews.

Registered by :func:`register_routes`, called from the pack's ``comfy_entrypoint`` (nothing happens at import).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

from aiohttp import web

from ..models.errors import LikenessError
from ..models.inversion.e4e_model import load_e4e
from ..models.preview.live import (
    MAX_BODY_BYTES,
    Models,
    PreviewError,
    directions_payload,
    parse_request,
    recent_sources,
)
from ..models.preview.live import render_png as _render_png
from .folders import file_list, search_paths

__all__ = ["register_routes", "MODELS"]

logger = logging.getLogger(__name__)

MODELS = Models(search_paths, file_list, load_e4e)
_REGISTERED = False


class _Previews:
    """One preview at a time; per client only the newest waiting request runs."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.latest: dict[str, int] = {}
        self.tokens = itertools.count(1)

    def cancel(self, client: str) -> None:
        self.latest[client] = next(self.tokens)


_PREVIEWS: _Previews | None = None


def _previews() -> _Previews:
    global _PREVIEWS
    if _PREVIEWS is None:  # created inside the server's event loop
        _PREVIEWS = _Previews()
    return _PREVIEWS


def _error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request):
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PreviewError(f"request body over {MAX_BODY_BYTES} bytes.", status=413)
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PreviewError(f"request body over {MAX_BODY_BYTES} bytes.", status=413)
    try:
        return json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreviewError(f"the body is not valid JSON: {exc}") from exc


async def get_directions(request: web.Request) -> web.Response:
    try:
        catalog = await asyncio.get_running_loop().run_in_executor(None, MODELS.catalog)
    except LikenessError as exc:
        return _error(500, str(exc))
    return web.json_response(directions_payload(catalog))


async def get_sources(request: web.Request) -> web.Response:
    return web.json_response({"nodes": recent_sources(), "files": file_list("likeness_wplus")})


async def post_preview(request: web.Request) -> web.Response:
    previews = _previews()
    try:
        req = parse_request(await _json_body(request))
    except PreviewError as exc:
        return _error(exc.status, str(exc))
    client = req.client_id or (request.remote or "")
    token = next(previews.tokens)
    previews.latest[client] = token
    async with previews.lock:
        if previews.latest.get(client) != token:
            return _error(409, "superseded by a newer preview request from this client", cancelled=True)
        try:
            png = await asyncio.get_running_loop().run_in_executor(None, _render_png, MODELS, req)
        except PreviewError as exc:
            return _error(exc.status, str(exc))
        except LikenessError as exc:  # missing/corrupt model files and the like
            return _error(422, str(exc))
        except Exception as exc:
            logger.exception("Likeness preview failed")
            return _error(500, f"preview failed: {type(exc).__name__}: {exc}")
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


async def post_cancel(request: web.Request) -> web.Response:
    try:
        body = await _json_body(request)
    except PreviewError as exc:
        return _error(exc.status, str(exc))
    client = body.get("client_id") if isinstance(body, dict) else None
    if not isinstance(client, str) or not client:
        return _error(400, "'client_id' (a string) is required.")
    _previews().cancel(client)
    return web.json_response({"cancelled": client})


def register_routes() -> bool:
    """Add the routes to ComfyUI's ``PromptServer`` (once). False when no server runs (in-process use)."""
    global _REGISTERED
    if _REGISTERED:
        return True
    try:
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        logger.debug("Likeness: no PromptServer instance, HTTP routes not registered")
        return False
    routes = server.routes
    routes.get("/likeness/directions")(get_directions)
    routes.get("/likeness/sources")(get_sources)
    routes.post("/likeness/preview")(post_preview)
    routes.post("/likeness/preview/cancel")(post_cancel)
    _REGISTERED = True
    return True
