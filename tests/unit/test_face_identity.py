"""Identity score maths, verdicts and table (synthetic embeddings, no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from likeness.models.errors import LikenessError
from likeness.models.face import (
    THRESHOLDS,
    Face,
    cosine_similarity,
    identity_scores,
    identity_table,
    l2_distance,
    thresholds_for,
)


def _f(emb, model="antelopev2/glintr100.onnx", x=0.0) -> Face:
    return Face(bbox=[x, 0, x + 10, 10], score=1, kps=np.zeros((5, 2)), embedding=emb, embedding_model=model)


def test_metrics():
    assert cosine_similarity([1, 0], [0, 2]) == 0.0
    assert math.isclose(cosine_similarity([1, 1], [2, 2]), 1.0)
    assert math.isclose(l2_distance([0, 3], [4, 0]), 5.0)
    with pytest.raises(LikenessError, match="different sizes"):
        cosine_similarity(np.zeros(128), np.zeros(512))
    with pytest.raises(LikenessError, match="no identity embedding"):
        cosine_similarity(Face(bbox=[0, 0, 1, 1], score=1, kps=np.zeros((5, 2))), [1.0])


def test_thresholds_per_recognizer():
    assert thresholds_for("dlib_resnet_v1_128") is THRESHOLDS["dlib"]
    assert thresholds_for("antelopev2/glintr100.onnx") is THRESHOLDS["arcface"]
    d = THRESHOLDS["dlib"]
    assert (d.verdict(0.99, 0.59), d.verdict(0.99, 0.65), d.verdict(0.99, 0.7)) == (
        "same person",
        "uncertain",
        "different",
    )
    a = THRESHOLDS["arcface"]
    assert (a.verdict(0.40, 9), a.verdict(0.3, 9), a.verdict(0.249, 9)) == ("same person", "uncertain", "different")


def test_best_face_per_image_and_table():
    ref = np.array([1.0, 0.0, 0.0])
    batch = [
        [_f([0.0, 1.0, 0.0]), _f([0.9, 0.1, 0.0], x=50)],  # second face matches
        [_f([0.1, 1.0, 0.0])],
        [],
    ]
    scores = identity_scores(ref, batch, embedding_model="antelopev2/glintr100.onnx")
    assert [s.face_index for s in scores] == [1, 0, -1]
    assert scores[0].verdict == "same person" and scores[1].verdict == "different" and scores[2].verdict == "no face"
    assert math.isclose(scores[0].cosine, 0.9 / math.hypot(0.9, 0.1), rel_tol=1e-9)
    table = identity_table(scores, "antelopev2/glintr100.onnx")
    lines = table.splitlines()
    assert "cosine >= 0.40 same, < 0.25 different" in lines[0]
    assert lines[2].split() == ["0", "1", f"{scores[0].cosine:.3f}", f"{scores[0].l2:.3f}", "same", "person"]
    assert lines[4].endswith("no face")


def test_mixed_recognizers_rejected():
    ref = _f([1.0, 0.0], model="dlib_resnet_v1_128")
    with pytest.raises(LikenessError, match="same backend"):
        identity_scores(ref, [[_f([1.0, 0.0], model="buffalo_l/w600k_r50.onnx")]])
