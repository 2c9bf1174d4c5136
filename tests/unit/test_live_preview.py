"""The live-preview core behind POST /likeness/preview and GET /likeness/directions (no ComfyUI)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.models.inversion.codes import WPlusCodes, save_wplus
from likeness.models.preview import live
from likeness.models.preview.live import Models, PreviewError, parse_request, remember_wplus, render_png


class FakeInverter:
    """Decodes a W+ code to a flat image whose grey level follows the code's mean (so edits change pixels)."""

    has_decoder = True
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def decode(self, code, size, fast):
        self.calls.append((tuple(code.shape), size, fast))
        level = torch.tanh(code.mean() * 10)
        return level.expand(code.shape[0], 3, size, size).clone()


@pytest.fixture
def models(tmp_path):
    folders = {
        "likeness_directions": [tmp_path / "dirs"],
        "e4e": [tmp_path / "e4e"],
        "likeness_wplus": [tmp_path / "wplus"],
    }
    d = tmp_path / "dirs" / "encoder4editing" / "interfacegan_directions"
    d.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for name in ("age", "smile"):
        torch.save(torch.randn(1, 512, generator=gen), d / f"{name}.pt")
    (tmp_path / "e4e").mkdir()
    (tmp_path / "e4e" / "e4e_ffhq_encode.pt").write_bytes(b"not read by the fake loader")
    save_wplus(tmp_path / "wplus" / "me.safetensors", WPlusCodes(torch.randn(2, 18, 512, generator=gen)))
    loaded = []

    def list_files(key):
        base = folders[key][0]
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def load(path: Path):
        loaded.append(path)
        return FakeInverter()

    m = Models(lambda: folders, list_files, load)
    m.loaded = loaded
    return m


def body(**over):
    base = {
        "source": {"file": "me.safetensors"},
        "direction_set": "encoder4editing/interfacegan",
        "edits": [{"attribute": "age", "strength": 2.0}],
    }
    base.update(over)
    return base


def png_pixels(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGB"
    return np.asarray(img)


def test_directions_payload_lists_names_ranges_rows_and_licence(models):
    payload = live.directions_payload(models.catalog())
    (s,) = payload["sets"]
    assert s["name"] == "encoder4editing/interfacegan"
    assert [a["name"] for a in s["attributes"]] == ["age", "smile"]
    assert s["attributes"][0]["range"] == [-5.0, 5.0] and s["attributes"][0]["default_rows"] == "all"
    assert "MIT" in s["licence"] and payload["problems"] == []


def test_preview_png_changes_with_strength_and_is_the_requested_size(models):
    zero = png_pixels(render_png(models, parse_request(body(edits=[{"attribute": "age", "strength": 0.0}]))))
    moved = png_pixels(render_png(models, parse_request(body(size=128))))
    assert zero.shape == (256, 256, 3) and moved.shape == (128, 128, 3)
    assert int(zero[0, 0, 0]) != int(moved[0, 0, 0])
    assert len(models.loaded) == 1, "the e4e model must be loaded once and cached"


def test_last_node_output_is_the_source_and_index_picks_the_code(models):
    codes = torch.zeros(2, 18, 512)
    codes[1] += 0.05
    remember_wplus("41", "Likeness_InvertFace", WPlusCodes(codes))
    first = png_pixels(render_png(models, parse_request(body(source={"node": "41"}, edits=[]))))
    second = png_pixels(render_png(models, parse_request(body(source={"node": "41"}, edits=[], index=1))))
    assert int(first[0, 0, 0]) == 128 and int(second[0, 0, 0]) == 186  # (tanh(0.5) + 1) * 127.5
    assert live.recent_sources()["41"] == {"class": "Likeness_InvertFace", "batch": 2, "labels": ["#0", "#1"]}
    with pytest.raises(PreviewError, match="outside the W\\+ batch of 2") as err:
        render_png(models, parse_request(body(source={"node": "41"}, index=2)))
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ([], 400, "must be a JSON object"),
        (body(source={}), 400, "needs 'node'"),
        (body(size=2048), 400, "'size' must be an integer in 64..512"),
        (body(edits=[{"attribute": "age", "strength": float("nan")}]), 400, "finite number"),
        (body(edits=[{"attribute": "age", "strength": 5000}]), 400, "outside -30..30, the range of the strength"),
        (body(edits=[{"attribute": "age"}] * 17), 400, "at most 16 edits"),
        (body(ganspace_mode="sideways"), 400, "ganspace_mode"),
        (body(source={"node": "nope"}), 404, "queue the workflow once"),
        (body(source={"file": "../../etc/passwd"}), 400, "only names inside"),
        (body(source={"file": "/etc/passwd"}), 400, "only names inside"),
        (body(source={"file": "other.safetensors"}), 404, "not a file in the 'likeness_wplus' model folder"),
        (body(e4e="missing.pt"), 404, "not a file in the 'e4e' model folder"),
        (body(direction_set="nope"), 404, "direction set 'nope' was not found"),
        (body(edits=[{"attribute": "hair", "strength": 1}]), 400, "'hair' is not in direction set"),
        (body(edits=[{"attribute": "age", "strength": 1, "rows": "40-50"}]), 400, "row"),
    ],
)
def test_bad_requests_get_a_clear_message_and_status(models, request_body, status, message):
    with pytest.raises(PreviewError, match=message) as err:
        render_png(models, parse_request(request_body))
    assert err.value.status == status


def test_empty_e4e_folder_says_to_run_the_doctor(models, tmp_path):
    (tmp_path / "e4e" / "e4e_ffhq_encode.pt").unlink()
    with pytest.raises(PreviewError, match="no e4e file: run Likeness Doctor") as err:
        render_png(models, parse_request(body()))
    assert err.value.status == 404


def test_catalog_is_cached_until_a_file_changes(models, tmp_path):
    first = models.catalog()
    assert models.catalog() is first
    torch.save(torch.ones(1, 512), tmp_path / "dirs" / "encoder4editing" / "interfacegan_directions" / "pose.pt")
    assert models.catalog() is not first and "pose" in models.catalog().sets["encoder4editing/interfacegan"]
