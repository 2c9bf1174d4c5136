"""Face record and the no-face policy / selection helpers (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.models.errors import LikenessError, NoFaceError
from likeness.models.face import (
    Face,
    FaceAnalyzer,
    NoFacePolicy,
    apply_policy,
    filter_faces,
    select_batch,
    select_faces,
)


def _face(x1, y1, size, score=0.9) -> Face:
    kps = [
        [x1 + 0.3 * size, y1 + 0.4 * size],
        [x1 + 0.7 * size, y1 + 0.4 * size],
        [x1 + 0.5 * size, y1 + 0.6 * size],
        [x1 + 0.35 * size, y1 + 0.8 * size],
        [x1 + 0.65 * size, y1 + 0.8 * size],
    ]
    return Face(bbox=[x1, y1, x1 + size, y1 + size], score=score, kps=kps)


# -- Face ----------------------------------------------------------------------------------------
def test_face_helpers_and_validation():
    f = Face(bbox=[10, 20, 50, 100], score=0.8, kps=np.zeros((5, 2)), embedding=[3.0, 4.0])
    assert (f.width, f.height, f.size, f.area) == (40.0, 80.0, 40.0, 3200.0)
    np.testing.assert_allclose(f.center, [30, 60])
    np.testing.assert_allclose(f.normed_embedding, [0.6, 0.8])
    g = f.shifted(5, -5, scale=2.0)
    np.testing.assert_allclose(g.bbox, [25, 35, 105, 195])
    with pytest.raises(ValueError, match=r"kps must have shape \[5,2\]"):
        Face(bbox=[0, 0, 1, 1], score=1, kps=np.zeros((68, 2)))
    with pytest.raises(ValueError, match="bbox"):
        Face(bbox=[0, 0, 1], score=1, kps=np.zeros((5, 2)))


# -- selection -----------------------------------------------------------------------------------
def test_selection_modes():
    right_big = _face(300, 10, 120, 0.7)
    left_small = _face(10, 10, 40, 0.95)
    middle = _face(150, 10, 80, 0.9)
    faces = [left_small, right_big, middle]  # detector order
    assert select_faces(faces) == [right_big]
    assert select_faces(faces, "index_ltr", 1) == [middle]
    assert select_faces(faces, "index_detector", 1) == [right_big]
    assert select_faces(faces, "all") == [left_small, middle, right_big]
    assert select_faces(faces, "index_ltr", 3) == []
    assert select_faces(faces, "largest", min_score=0.8) == [middle]
    assert select_faces(faces, "all", min_size=50) == [middle, right_big]
    assert filter_faces(faces, min_size=200) == []
    with pytest.raises(LikenessError, match="Unknown face selection mode 'biggest'"):
        select_faces(faces, "biggest")


def test_select_batch_reasons():
    batch = [[_face(0, 0, 40)], [], [_face(0, 0, 20)]]
    selected, reasons = select_batch(batch, "index_ltr", 0, min_size=30)
    assert [len(s) for s in selected] == [1, 0, 0]
    assert reasons[1] == "no face detected"
    assert "none passes min_size 30 px" in reasons[2] and "largest 20 px" in reasons[2]
    _, reasons = select_batch(batch, "index_ltr", 2)
    assert reasons[0] == "face index 2 requested (index_ltr) but only 1 face(s) after filtering"


# -- no-face policy --------------------------------------------------------------------------------
def test_policy_error_names_index_and_size():
    batch = [[_face(0, 0, 40)], [], []]
    with pytest.raises(NoFaceError) as err:
        apply_policy(batch, "error", [(512, 512), (600, 400), (64, 64)], backend="embedded", det_thresh=0.5)
    msg = str(err.value)
    assert "batch image 1 (400x600 px)" in msg and "also images [2]" in msg
    assert "threshold (now 0.5)" in msg and "det_size" in msg and "insightface backend" in msg


def test_policy_skip_and_pass_through():
    batch = [[], [_face(0, 0, 40)], []]
    sizes = [(8, 8)] * 3
    kept, report = apply_policy(batch, "skip", sizes, reasons={2: "custom reason"})
    assert kept == [1] and report.skipped == {0: "no face detected", 2: "custom reason"} and report.passed_through == {}
    assert "image 2: skipped (custom reason)" in report.summary()
    kept, report = apply_policy(batch, NoFacePolicy.PASS_THROUGH, sizes)
    assert kept == [1] and sorted(report.passed_through) == [0, 2] and report.skipped == {}
    assert sorted(report.missing) == [0, 2]
    kept, report = apply_policy([[_face(0, 0, 4)]], "passthrough", [(8, 8)])
    assert kept == [0] and report.missing == {}
    with pytest.raises(LikenessError, match="Unknown no-face policy"):
        apply_policy(batch, "ignore", sizes)
    with pytest.raises(LikenessError, match="3 face lists but 2 image sizes"):
        apply_policy(batch, "skip", sizes[:2])


# -- retry ladder (base class) ---------------------------------------------------------------------
class _SeesOnlyPadded(FaceAnalyzer):
    """Finds one face at the image centre, but only in images larger than 100 px (i.e. padded)."""

    name = "stub"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def _detect_once(self, rgb, det_size):
        self.calls.append((rgb.shape[:2], det_size))
        h, w = rgb.shape[:2]
        if h <= 100:
            return []
        return [_face(w / 2 - 10, h / 2 - 10, 20)]

    def embed(self, image, face):
        raise NotImplementedError


def test_retry_ladder_then_padding_maps_back():
    a = _SeesOnlyPadded(det_size=448)
    faces = a.detect(np.zeros((80, 100, 3), np.uint8))
    assert [c[1] for c in a.calls] == [448, 384, 320, 448]  # sizes, then padded once
    assert a.calls[-1][0] == (80 + 50, 100 + 50)  # 25 % of the longer side on each side
    np.testing.assert_allclose(faces[0].bbox, [40, 30, 60, 50])  # back in original coordinates
    b = _SeesOnlyPadded(retry=False, pad_retry=False)
    assert b.detect(np.zeros((80, 100), np.uint8)) == [] and len(b.calls) == 1
    with pytest.raises(LikenessError, match="det_thresh must be in"):
        _SeesOnlyPadded(det_thresh=1.5)
