"""A weight-free insightface pack for offline tests (ecosystem.md §3): ONNX graphs built with ``onnx.helper``.

* detector (SCRFD layout, 9 outputs): one face per bright 32x32 cell on the stride-32 grid, box
  centred on the cell +- 64 px, keypoints = the ArcFace template scaled to 128 px around it;
* recogniser (112x112 -> 512): average pool + a fixed random matrix;
* optional 2d106 landmark model (192x192 -> 212): constant points placed so that the eye and mouth
  points PSTF aligns with sit on the detector's keypoints.

Import with ``importlib`` (see tests/unit/test_face_insightface.py); needs onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


def _landmark106(path, template_kps: np.ndarray) -> None:
    """192x192 -> [1, 212] constant points (crop units); eye/mouth groups on the template keypoints.

    insightface maps an output c in [-1, 1] to ``bbox_centre + c * 1.5 * max(w, h) / 2`` px; the fake
    detector's box is 128 px wide, so c = (point - centre) / 96.
    """
    pts = np.tile(((template_kps[2] - 56.0) / 112.0 * 128.0) / 96.0, (106, 1))  # all on the nose ...
    rel = (template_kps - 56.0) / 112.0 * 128.0 / 96.0
    pts[[33, 35, 36, 37, 39, 40, 41, 42]] = rel[0]
    pts[[87, 89, 90, 91, 93, 94, 95, 96]] = rel[1]
    pts[56], pts[69] = rel[3], rel[4]
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["m"], axes=[1, 2, 3], keepdims=0, name="reduce"),
        helper.make_node("Unsqueeze", ["m", "ax"], ["m2"], name="unsq"),
        helper.make_node("MatMul", ["m2", "zero_row"], ["z"], name="zero"),
        helper.make_node("Add", ["z", "pts"], ["fc1"], name="add"),
    ]
    inits = [
        _const("zero_row", np.zeros((1, 212))),
        _const("pts", pts.reshape(1, 212)),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["n", 212])
    _save(nodes, [inp], [out], inits, path)


def write_fake_pack(root: Path, name: str = "fakepack", with_106: bool = False) -> Path:
    """``root/models/<name>/`` with the fake detector and recogniser (+ the 106-point model); returns root."""
    pack = Path(root) / "models" / name
    pack.mkdir(parents=True, exist_ok=True)
    _detector(pack / "det_fake.onnx")
    _recognizer(pack / "rec_fake.onnx")
    if with_106:
        _landmark106(pack / "2d106_fake.onnx", ARCFACE_TEMPLATE)
    return Path(root)


def bright_cell_image(cells: tuple[tuple[int, int], ...] = ((288, 320),), size: int = 640) -> np.ndarray:
    """Black RGB image with a white 32x32 cell at each (x, y) top-left corner (one fake face each)."""
    img = np.zeros((size, size, 3), np.uint8)
    for x, y in cells:
        img[y : y + 32, x : x + 32] = 255
    return img


def expected_kps(cell: tuple[int, int] = (288, 320)) -> np.ndarray:
    """Where the fake detector puts the 5 keypoints for the cell at ``cell``."""
    return (ARCFACE_TEMPLATE - 56.0) / 112.0 * 128.0 + np.array(cell, np.float32)
