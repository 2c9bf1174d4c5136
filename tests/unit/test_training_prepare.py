"""prepare-dataset: photos -> items, skip reasons, resume, PSTF keypoints; offline with the fake insightface pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")

from likeness.models.errors import LikenessError  # noqa: E402
from likeness.models.face import create_analyzer  # noqa: E402
from likeness.models.training.dataset import load_items, read_manifest  # noqa: E402
from likeness.models.training.prepare import PrepareSettings, prepare_dataset  # noqa: E402
from likeness.tools.smoke.insightface_pack import ARCFACE_TEMPLATE, write_fake_pack  # noqa: E402


def bright_cells(cells: tuple[tuple[int, int], ...], size: int = 640) -> np.ndarray:
    """Black image with a white 32 px cell at each (x, y) top-left corner: one fake face each."""
    img = np.zeros((size, size, 3), np.uint8)
    for x, y in cells:
        img[y : y + 32, x : x + 32] = 255
    return img


def expected_kps(cell: tuple[int, int]) -> np.ndarray:
    """The fake detector's 5 keypoints for the cell at ``cell``."""
    return (ARCFACE_TEMPLATE - 56.0) / 112.0 * 128.0 + np.array(cell, np.float32)


CELL = (288, 320)


class MeanEncoder:
    """Stand-in for e4e: W+ = per-image mean pixel in every entry (so whitening visibly changes the code)."""

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and tuple(images.shape[1:]) == (3, 256, 256)
        self.calls.append(images.clone())
        return images.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 18, 512).clone()


@pytest.fixture(scope="module")
def pack_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("if")
    write_fake_pack(root / "models" / "antelopev2")
    return root


@pytest.fixture
def analyzer(pack_root):
    return create_analyzer("insightface", pack_root, pack="antelopev2")


def _photos(folder: Path) -> Path:
    folder.mkdir()
    img = bright_cells((CELL,))
    img[:200, :, 0] = 90  # some non-black background, so whitening changes the e4e input
    Image.fromarray(img).save(folder / "a.png")
    (folder / "a.txt").write_text("a person smiling\n\na person outdoors\n")
    Image.fromarray(bright_cells(((96, 96), (480, 480)))).save(folder / "b.png")
    Image.fromarray(np.zeros((320, 320, 3), np.uint8)).save(folder / "c.png")
    (folder / "e.jpg").write_bytes(b"not a jpeg")
    (folder / "sub").mkdir()
    Image.fromarray(bright_cells((CELL,))).save(folder / "sub" / "f.png")
    return folder


def test_wplus_items_skip_reasons_and_resume(tmp_path, analyzer):
    photos, out = _photos(tmp_path / "photos"), tmp_path / "data"
    enc = MeanEncoder()
    seen = []
    settings = PrepareSettings("wplus", photo_max=320, face_backend="fake")
    info = prepare_dataset(photos, out, settings, analyzer, enc, progress=lambda d, t, r: seen.append((d, t, r)))
    assert [(d, t) for d, t, _ in seen] == [(i, 5) for i in range(1, 6)]
    records = read_manifest(out)
    assert {k: (r.status, r.reason.split(" (")[0]) for k, r in records.items()} == {
        "a.png": ("ok", ""),
        "b.png": ("skipped", "2 faces"),
        "c.png": ("skipped", "no face"),
        "e.jpg": ("skipped", records["e.jpg"].reason),
        "sub/f.png": ("ok", ""),
    }
    assert records["e.jpg"].reason.startswith("unreadable image")
    assert info.counts["ok"] == 2 and info.counts["skipped"] == 3
    assert info.counts["skipped_by_reason"] == {"2 faces (use --multi-face largest to keep the largest)": 1,
                                                "no face": 1, "unreadable image": 1}  # fmt: skip
    assert records["a.png"].caption == ["a person smiling", "a person outdoors"]
    assert records["a.png"].landmarks == "kps5" and records["a.png"].mask == "landmark_hull"

    items = {it.id: it for it in load_items(out, "wplus")}
    assert set(items) == {"a.png", "sub__f.png"}
    a = items["a.png"]
    assert a.tensors["wplus"].shape == (18, 512) and a.tensors["wplus_whitened"].shape == (18, 512)
    assert float(a.tensors["wplus_whitened"][0, 0]) > float(a.tensors["wplus"][0, 0]), "white background raises it"
    assert a.image("aligned.png").size == (512, 512) and a.image("aligned_mask.png").mode == "L"
    photo, pmask = a.image("photo.png"), np.asarray(a.image("photo_mask.png"), np.float64)
    assert photo.size == (320, 320) == pmask.shape[::-1]
    yy, xx = np.nonzero(pmask > 127)
    centre = expected_kps(CELL).mean(0) / 2  # the photo was halved (photo_max 320)
    assert abs(xx.mean() - centre[0]) < 12 and abs(yy.mean() - centre[1]) < 20
    assert len(enc.calls) == 2 and enc.calls[0].shape[0] == 2  # one batch [crop, whitened crop] per face

    seen.clear()
    prepare_dataset(photos, out, settings, analyzer, enc, progress=lambda d, t, r: seen.append((d, t, r)))
    assert len(enc.calls) == 2, "resume: nothing encoded again"
    assert [r.status for _, _, r in seen] == ["ok", "skipped", "skipped", "skipped", "ok"]
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 5

    Image.fromarray(bright_cells((CELL,))).save(photos / "c.png")  # c.png changed: now one face
    prepare_dataset(photos, out, settings, analyzer, enc, retry_skipped=False)
    assert read_manifest(out)["c.png"].status == "ok" and len(enc.calls) == 3
    prepare_dataset(photos, out, settings, analyzer, enc, retry_skipped=True)
    assert len(enc.calls) == 3 and read_manifest(out)["b.png"].status == "skipped"  # retried, still 2 faces

    with pytest.raises(LikenessError, match=r"other settings \(photo_max: 320 -> 640\)"):
        prepare_dataset(photos, out, PrepareSettings("wplus", photo_max=640, face_backend="fake"), analyzer, enc)
    with pytest.raises(LikenessError, match="prepared for method 'wplus'"):
        load_items(out, "pstf")


def test_multi_face_largest_and_limit_and_stop(tmp_path, analyzer):
    photos, out = _photos(tmp_path / "photos"), tmp_path / "data"
    settings = PrepareSettings("wplus", photo_max=320, multi_face="largest")
    prepare_dataset(photos, out, settings, analyzer, MeanEncoder(), limit=2)
    assert [r.status for r in read_manifest(out).values()] == ["ok", "ok"]
    prepare_dataset(photos, out, settings, analyzer, MeanEncoder(), should_stop=lambda: True)
    assert len(read_manifest(out)) == 2
    assert json.loads((out / "dataset.json").read_text())["counts"]["ok"] == 2


def test_pstf_keypoints_are_in_the_crop_not_double_offset(tmp_path, analyzer):
    photos, out = tmp_path / "photos", tmp_path / "data"
    photos.mkdir()
    Image.fromarray(bright_cells((CELL,))).save(photos / "p.png")
    prepare_dataset(photos, out, PrepareSettings("pstf", size=256), analyzer, MeanEncoder())
    (item,) = load_items(out, "pstf")
    assert read_manifest(out)["p.png"].landmarks == "lm106"
    kps = item.tensors["kps"].numpy()
    assert item.image("aligned.png").size == (256, 256)
    assert (kps > 0).all() and (kps < 256).all(), f"keypoints must lie in the crop, got {kps}"
    eyes = kps[:2].mean(0)
    assert abs(eyes[0] - 128) < 1.0, "FFHQ alignment centres the eyes horizontally"
    assert abs(kps[0, 1] - kps[1, 1]) < 0.5 and kps[0, 0] < kps[1, 0] and kps[2, 1] > eyes[1] < kps[3, 1]
    face = analyzer.detect(np.asarray(Image.open(photos / "p.png")))[0]
    np.testing.assert_allclose(item.tensors["embedding"].numpy(), face.embedding, rtol=1e-5)


def test_pstf_refuses_an_analyzer_without_embeddings(tmp_path, pack_root):
    from likeness.models.face.embedded import EmbeddedAnalyzer

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(bright_cells((CELL,))).save(photos / "p.png")
    no_rec = EmbeddedAnalyzer(landmarks68=False, embeddings=False)
    with pytest.raises(LikenessError, match="PSTF needs antelopev2.s ArcFace identity embeddings"):
        prepare_dataset(photos, tmp_path / "d", PrepareSettings("pstf"), no_rec, MeanEncoder())
    (tmp_path / "empty").mkdir()
    with pytest.raises(LikenessError, match="holds no image"):
        prepare_dataset(tmp_path / "empty", tmp_path / "d2", PrepareSettings("wplus"), no_rec, MeanEncoder())
    with pytest.raises(LikenessError, match="is not a folder of photos"):
        prepare_dataset(tmp_path / "nope", tmp_path / "d2", PrepareSettings("wplus"), no_rec, MeanEncoder())


def test_prepare_dataset_cli(tmp_path, pack_root, monkeypatch, capsys, cli_run):
    """The CLI verb: insightface analyzer from --models-dir, e4e from --e4e, landmark-hull masks, a summary line."""
    import likeness.models.inversion.e4e_model as e4e_model

    class Loaded(MeanEncoder):
        def to(self, device):
            assert str(device) == "cpu"
            return self

    monkeypatch.setattr(e4e_model, "load_e4e", lambda path: Loaded())
    models = tmp_path / "models"
    models.mkdir()
    (models / "insightface").symlink_to(pack_root, target_is_directory=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(bright_cells((CELL,))).save(photos / "one.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "none.png")
    argv = ["prepare-dataset", "--photos", str(photos), "--out", str(tmp_path / "d"), "--method", "pstf",
            "--models-dir", str(models), "--e4e", str(tmp_path / "e4e.pt"), "--size", "128"]  # fmt: skip
    assert cli_run(argv) == 0
    captured = capsys.readouterr()
    assert "1 items ready, 1 skipped (no face: 1)" in captured.out
    assert "[1/2] none.png: skipped (no face)" in captured.err and "[2/2] one.png: ok" in captured.err
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["settings"]["face_backend"] == "insightface:antelopev2/glintr100.onnx"
    assert info["settings"]["mask"] == "landmark_hull"
