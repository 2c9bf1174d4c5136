"""insightface backend with a weight-free fake pack and the offline missing-pack guard."""

from __future__ import annotations

import socket

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("insightface")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from likeness.models.errors import LikenessError, MissingModelError  # noqa: E402
from likeness.models.face import create_analyzer, find_insightface_pack, resolve_providers  # noqa: E402

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
)


def _const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _save(nodes, inputs, outputs, inits, path) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _detector(path) -> None:
    """9 outputs (score/bbox/kps at strides 8/16/32, 2 anchors): fires on bright stride-32 cells."""
    nodes, inits, outs = [], [], {"score": [], "bbox": [], "kps": []}
    kps = ((ARCFACE_TEMPLATE - 56.0) / 112.0 * 128.0 / 32.0).reshape(-1)  # template in stride units
    for s in (8, 16, 32):
        nodes += [
            helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("ReduceMean", [f"pool{s}"], [f"mean{s}"], axes=[1], keepdims=1),
            helper.make_node("Sub", [f"mean{s}", f"half{s}"], [f"c{s}"]),
            helper.make_node("Mul", [f"c{s}", f"gain{s}"], [f"logit{s}"]),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"p{s}"]),
            helper.make_node("Concat", [f"p{s}", f"p{s}"], [f"p2{s}"], axis=1),
            helper.make_node("Transpose", [f"p2{s}"], [f"pt{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"pt{s}", "shape1"], [f"score_{s}"]),
            helper.make_node("Mul", [f"mean{s}", "zero"], [f"z{s}"]),
            helper.make_node("Add", [f"z{s}", "box_c"], [f"b{s}"]),
            helper.make_node("Transpose", [f"b{s}"], [f"bt{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"bt{s}", "shape4"], [f"bbox_{s}"]),
            helper.make_node("Add", [f"z{s}", "kps_c"], [f"k{s}"]),
            helper.make_node("Transpose", [f"k{s}"], [f"kt{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"kt{s}", "shape10"], [f"kps_{s}"]),
        ]
        # stride 32: sigmoid(40 * (mean - 0.5)) ~ 1 on a bright cell, ~0 elsewhere; strides 8/16: ~0 always
        inits += [_const(f"half{s}", 0.5 if s == 32 else 100.0), _const(f"gain{s}", 40.0 if s == 32 else 1.0)]
        for k in outs:
            outs[k].append(f"{k}_{s}")
    inits += [
        _const("zero", 0.0),
        _const("box_c", np.full((1, 8, 1, 1), 2.0)),
        _const("kps_c", np.tile(kps, 2).reshape(1, 20, 1, 1)),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "shape4"),
        numpy_helper.from_array(np.array([-1, 10], np.int64), "shape10"),
    ]
    names = outs["score"] + outs["bbox"] + outs["kps"]
    dims = [1] * 3 + [4] * 3 + [10] * 3
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", d]) for n, d in zip(names, dims, strict=True)]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    _save(nodes, [inp], outputs, inits, path)


def _recognizer(path) -> None:
    """112x112 -> 512: average-pool 14 -> flatten -> Gemm with a fixed random matrix (no Sub/Mul names)."""
    w = np.random.default_rng(0).standard_normal((512, 192)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W"], ["fc1"], transB=1, name="fc"),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, 112, 112])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["n", 512])
    _save(nodes, [inp], [out], [_const("W", w)], path)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    pack = root / "models" / "fakepack"
    pack.mkdir(parents=True)
    _detector(pack / "det_fake.onnx")
    _recognizer(pack / "rec_fake.onnx")
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
