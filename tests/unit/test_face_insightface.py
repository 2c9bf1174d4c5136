"""insightface backend with a weight-free fake pack and the offline missing-pack guard."""

from __future__ import annotations

import socket

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")

from likeness.models.errors import LikenessError, MissingModelError  # noqa: E402
from likeness.models.face import create_analyzer, find_insightface_pack, resolve_providers  # noqa: E402
from likeness.tools.smoke.insightface_pack import ARCFACE_TEMPLATE, write_detector, write_recognizer  # noqa: E402


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    pack = root / "models" / "fakepack"
    pack.mkdir(parents=True)
    write_detector(pack / "det_fake.onnx")
    write_recognizer(pack / "rec_fake.onnx")
    return root


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _bright_cell_image() -> np.ndarray:
    img = np.zeros((640, 640, 3), np.uint8)
    img[320:352, 288:320] = 255
    return img


def test_fake_pack_end_to_end(fake_root, no_network):
    analyzer = create_analyzer("insightface", models_root=fake_root, pack="fakepack", det_size=640)
    faces = analyzer.detect(_bright_cell_image())
    assert len(faces) == 1
    f = faces[0]
    # anchor centre of the bright stride-32 cell (x 288, y 320) +- 2 * 32 px
    np.testing.assert_allclose(f.bbox, [224, 256, 352, 384], atol=1e-3)
    assert f.score > 0.9
    expected_kps = (ARCFACE_TEMPLATE - 56.0) / 112.0 * 128.0 + np.array([288, 320])
    np.testing.assert_allclose(f.kps, expected_kps, atol=1e-3)
    assert f.embedding.shape == (512,) and f.embedding.dtype == np.float32
    assert abs(np.linalg.norm(f.normed_embedding) - 1) < 1e-5
    assert f.embedding_model == "fakepack/rec_fake.onnx" == analyzer.embedding_model
    np.testing.assert_allclose(analyzer.embed(_bright_cell_image(), f), f.embedding, rtol=1e-5, atol=1e-5)
    # RGB input is converted to BGR for insightface: a grey/float copy gives the same box
    grey = _bright_cell_image()[:, :, 0].astype(np.float32) / 255.0
    np.testing.assert_allclose(analyzer.detect(grey)[0].bbox, f.bbox, atol=1e-3)


def test_fake_pack_blank_image_retries_then_empty(fake_root, no_network):
    analyzer = create_analyzer("insightface", models_root=[fake_root.parent / "missing", fake_root], pack="fakepack")
    assert analyzer.retry_sizes(640, 640) == [640, 576, 512, 448, 384, 320]
    assert analyzer.detect(np.zeros((320, 320, 3), np.uint8)) == []


def test_auto_prefers_insightface_when_pack_present(fake_root, tmp_path):
    assert create_analyzer("auto", models_root=fake_root, pack="fakepack").name == "insightface"
    assert create_analyzer("auto", models_root=tmp_path, pack="fakepack").name == "embedded"


def test_missing_pack_raises_clear_error_offline(tmp_path, no_network):
    with pytest.raises(MissingModelError) as err:
        create_analyzer("insightface", models_root=tmp_path, pack="antelopev2")
    msg = str(err.value)
    assert str(tmp_path / "models" / "antelopev2") in msg
    assert "never downloads" in msg and "NON-COMMERCIAL" in msg and "embedded" in msg
    assert not (tmp_path / "models").exists()  # nothing was created or downloaded


def test_nested_and_misplaced_packs_are_explained(tmp_path, fake_root):
    onnx_bytes = (fake_root / "models" / "fakepack" / "det_fake.onnx").read_bytes()
    nested = tmp_path / "a" / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    (nested / "scrfd.onnx").write_bytes(onnx_bytes)
    flat = tmp_path / "b" / "antelopev2"
    flat.mkdir(parents=True)
    (flat / "scrfd.onnx").write_bytes(onnx_bytes)
    empty = tmp_path / "c" / "models" / "antelopev2"
    empty.mkdir(parents=True)
    with pytest.raises(MissingModelError) as err:
        find_insightface_pack("antelopev2", [tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    msg = str(err.value)
    assert "one folder too deep" in msg and str(nested) in msg
    assert "add the 'models' folder" in msg
    assert f"{empty} exists but holds no .onnx files" in msg


def test_pack_without_detector_is_a_checkpoint_error(tmp_path, fake_root):
    pack = tmp_path / "models" / "recogonly"
    pack.mkdir(parents=True)
    (pack / "rec.onnx").write_bytes((fake_root / "models" / "fakepack" / "rec_fake.onnx").read_bytes())
    with pytest.raises(LikenessError, match="no usable face detector"):
        create_analyzer("insightface", models_root=tmp_path, pack="recogonly")


def test_providers():
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(LikenessError, match="not available"):
        resolve_providers(["NoSuchExecutionProvider"])
