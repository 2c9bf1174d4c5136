"""A weight-free stand-in for an insightface model pack (ONNX graphs with the official inputs and outputs).

insightface picks a model's role from its ONNX signature, so three small graphs
built with the ``onnx`` package make ``FaceAnalysis`` work offline:

* detector (SCRFD with keypoints: 9 outputs, score/bbox/kps at strides 8, 16, 32,
  2 anchors): fires on bright stride-32 cells (channel mean > 0.5 after
  insightface's normalisation, i.e. pixels brighter than ~190), with a fixed
  128 px box and the ArcFace 5-point template as keypoints;
* recogniser (ArcFace: 112x112 -> 512): average pool 14 -> flatten -> a fixed
  random Gemm, so different crops give different embeddings;
* 2d106 landmarks (192x192 -> 212): a constant 106-point layout whose eye rings
  average to the template's eyes and whose points 56 / 69 are its mouth corners,
  so PSTF's 106-point alignment agrees with the 5-point one on these faces.

Written as ``scrfd_10g_bnkps.onnx``, ``glintr100.onnx`` and ``2d106det.onnx`` (the
antelopev2 file names) by ``likeness smoke-models``. Every "face" it finds is a
bright patch, not a face: workflows run end to end, nothing more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "ARCFACE_TEMPLATE",
    "LANDMARK_106_TEMPLATE",
    "write_detector",
    "write_recognizer",
    "write_landmark_106",
    "write_fake_pack",
]

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
)
"""insightface's 5-point ArcFace template in a 112 px crop (eyes, nose, mouth corners)."""
_EYE_RINGS = {"left": (33, 35, 36, 37, 39, 40, 41, 42), "right": (87, 89, 90, 91, 93, 94, 95, 96)}
_EYE_CORNERS = {"left": (34, 38), "right": (88, 92)}
_MOUTH_CORNERS = (56, 69)


def _landmark_template() -> np.ndarray:
    """106 points in the landmark model's output units ([-1, 1] of its 192 px crop) for the fake detector's face."""
    kps = (ARCFACE_TEMPLATE.astype(np.float64) - 56.0) / 112.0 * 128.0 / 96.0  # box 128 px, crop scale 1
    angles = np.linspace(0.15 * np.pi, 0.85 * np.pi, 106)
    points = np.stack([0.45 * np.cos(angles), 0.55 * np.sin(angles) - 0.05], axis=1)  # jaw-like arc, default
    ring = np.array([[np.cos(a), np.sin(a)] for a in np.arange(8) * np.pi / 4]) * [0.06, 0.03]
    for side, eye in (("left", kps[0]), ("right", kps[1])):
        points[list(_EYE_RINGS[side])] = eye + ring  # opposite pairs: the ring's mean is the eye
        points[list(_EYE_CORNERS[side])] = eye + [[-0.08, 0.0], [0.08, 0.0]]
    points[_MOUTH_CORNERS[0]], points[_MOUTH_CORNERS[1]] = kps[3], kps[4]
    return points.astype(np.float32)


LANDMARK_106_TEMPLATE = _landmark_template()
"""The fake 2d106 model's constant output, ``[106, 2]`` in [-1, 1] crop units."""


def _helpers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, arr) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    def save(nodes, inputs, outputs, inits, path) -> None:
        graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    return helper, numpy_helper, TensorProto, const, save


def write_detector(path: str | Path) -> None:
    """SCRFD-style detector: 9 outputs, fires on bright stride-32 cells with the template keypoints."""
    helper, numpy_helper, TensorProto, const, save = _helpers()
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
        inits += [const(f"half{s}", 0.5 if s == 32 else 100.0), const(f"gain{s}", 40.0 if s == 32 else 1.0)]
        for k in outs:
            outs[k].append(f"{k}_{s}")
    inits += [
        const("zero", 0.0),
        const("box_c", np.full((1, 8, 1, 1), 2.0)),
        const("kps_c", np.tile(kps, 2).reshape(1, 20, 1, 1)),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "shape4"),
        numpy_helper.from_array(np.array([-1, 10], np.int64), "shape10"),
    ]
    names = outs["score"] + outs["bbox"] + outs["kps"]
    dims = [1] * 3 + [4] * 3 + [10] * 3
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", d]) for n, d in zip(names, dims, strict=True)]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    save(nodes, [inp], outputs, inits, path)


def write_recognizer(path: str | Path, seed: int = 0) -> None:
    """ArcFace-style recogniser 112x112 -> 512 (no node named Sub*/Mul*: insightface reads those as normalisation)."""
    helper, _, TensorProto, const, save = _helpers()
    w = np.random.default_rng(seed).standard_normal((512, 192)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W"], ["fc1"], transB=1, name="fc"),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, 112, 112])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["n", 512])
    save(nodes, [inp], [out], [const("W", w)], path)


def write_landmark_106(path: str | Path) -> None:
    """2d106-style landmark model 192x192 -> 212 returning :data:`LANDMARK_106_TEMPLATE` for any crop."""
    helper, _, TensorProto, const, save = _helpers()
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["m"], axes=[1, 2, 3], keepdims=0, name="mean"),
        helper.make_node("Reshape", ["m", "shape11"], ["m2"], name="reshape"),
        helper.make_node("Gemm", ["m2", "zero_w", "template"], ["fc1"], name="fc"),
    ]
    inits = [
        const("zero_w", np.zeros((1, 212))),
        const("template", LANDMARK_106_TEMPLATE.reshape(1, 212)),
    ]
    from onnx import numpy_helper

    inits.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "shape11"))
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])
    save(nodes, [inp], [out], inits, path)


def write_fake_pack(
    folder: str | Path, *, names: tuple[str, str, str] = ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx")
) -> list[Path]:
    """Write detector, recogniser and 2d106 models into ``folder`` (antelopev2 file names by default)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in names]
    write_detector(paths[0])
    write_recognizer(paths[1])
    write_landmark_106(paths[2])
    return paths
