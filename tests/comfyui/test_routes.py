"""The pack's HTTP routes on a real ComfyUI server: /likeness/directions, /likeness/sources, /likeness/preview."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image


def _call(url: str, path: str, body=None, raw: bytes | None = None, timeout: float = 300.0):
    """(status, content type, body bytes) of a GET (no body) or a JSON POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.fixture(scope="module")
def server(comfy_server):
    from likeness.models.inversion.codes import WPlusCodes, save_wplus

    folder = comfy_server.base / "output" / "likeness_wplus"
    gen = torch.Generator().manual_seed(3)
    save_wplus(folder / "route_test.safetensors", WPlusCodes(torch.randn(2, 18, 512, generator=gen) * 0.3))
    return comfy_server


def _preview(server, **over):
    body = {
        "source": {"file": "route_test.safetensors"},
        "direction_set": "encoder4editing/interfacegan",
        "edits": [{"attribute": "age", "strength": 0.0}],
        "client_id": "route-tests",
    }
    body.update(over)
    return _call(server.url, "/likeness/preview", body)


def test_directions_route_lists_sets_attributes_ranges_and_licence(server):
    status, kind, data = _call(server.url, "/api/likeness/directions")
    assert status == 200 and kind.startswith("application/json")
    sets = {s["name"]: s for s in json.loads(data)["sets"]}
    smoke = sets["encoder4editing/interfacegan"]
    assert {a["name"] for a in smoke["attributes"]} == {"age", "pose", "smile"}
    age = next(a for a in smoke["attributes"] if a["name"] == "age")
    assert age["range"] == [-5.0, 5.0] and age["default_rows"] == "all" and "MIT" in age["licence"]


def test_preview_is_a_256_png_that_changes_with_the_strength(server):
    pngs = []
    for strength in (0.0, 3.0):
        status, kind, data = _preview(server, edits=[{"attribute": "age", "strength": strength}])
        assert status == 200, data[:500]
        assert kind == "image/png"
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.size == (256, 256) and img.mode == "RGB"
        pngs.append(data)
    assert pngs[0] != pngs[1]
    status, _, data = _preview(server, size=128, index=1)
    assert status == 200 and Image.open(io.BytesIO(data)).size == (128, 128)


@pytest.mark.parametrize(
    ("over", "status", "message"),
    [
        ({"source": {"file": "../../../etc/passwd"}}, 400, "only names inside"),
        ({"source": {"file": "nope.safetensors"}}, 404, "not a file in the 'likeness_wplus' model folder"),
        ({"source": {"node": "99999"}}, 404, "queue the workflow once"),
        ({"e4e": "other.pt"}, 404, "not a file in the 'e4e' model folder"),
        ({"direction_set": "nope"}, 404, "direction set 'nope' was not found"),
        ({"edits": [{"attribute": "hair", "strength": 1}]}, 400, "'hair' is not in direction set"),
        ({"size": 4096}, 400, "'size' must be an integer in 64..512"),
        ({"edits": [{"attribute": "age", "strength": 1e9}]}, 400, "strength 1e+09 is outside -30..30"),
    ],
)
def test_bad_previews_answer_4xx_json_with_a_message(server, over, status, message):
    got, kind, data = _preview(server, **over)
    assert got == status and kind.startswith("application/json"), (got, data[:300])
    assert message in json.loads(data)["error"]


def test_body_limits_and_malformed_json(server):
    status, _, data = _call(server.url, "/likeness/preview", raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    status, _, data = _call(server.url, "/likeness/preview", raw=b" " * (64 * 1024 + 10))
    assert status == 413 and "over 65536 bytes" in json.loads(data)["error"]


def test_a_newer_request_from_the_same_client_supersedes_the_waiting_one(server):
    statuses: dict[int, int] = {}

    def send(k: int, strength: float) -> None:
        statuses[k] = _preview(server, edits=[{"attribute": "age", "strength": strength}], client_id="racer")[0]

    threads = []
    for k, strength in enumerate((1.0, 2.0, 3.0)):
        threads.append(threading.Thread(target=send, args=(k, strength)))
        threads[-1].start()
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    assert statuses[2] == 200, statuses  # the newest always runs
    assert set(statuses.values()) <= {200, 409}, statuses
    assert statuses[1] == 409, f"the request waiting behind the first should have been superseded: {statuses}"
    status, _, data = _call(server.url, "/likeness/preview/cancel", {"client_id": "racer"})
    assert status == 200 and json.loads(data) == {"cancelled": "racer"}


def test_sources_list_the_saved_files(server):
    status, _, data = _call(server.url, "/likeness/sources")
    assert status == 200 and "route_test.safetensors" in json.loads(data)["files"]
