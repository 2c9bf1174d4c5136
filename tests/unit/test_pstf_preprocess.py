"""PSTF preprocessing (largest face, raw antelopev2 embedding, 106-point alignment) and InstantID's draw_kps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from likeness.models.errors import LikenessError, NoFaceError
from likeness.models.face.types import Face
from likeness.models.inversion.align import ffhq_quad, ffhq_quad_from_106
from likeness.models.pstf.kps import KPS_COLORS, draw_kps
from likeness.models.pstf.preprocess import identity_embedding, largest_face, recipe_landmarks

KPS = np.array([[40.0, 40.0], [80.0, 41.0], [60.0, 62.0], [45.0, 82.0], [76.0, 83.0]], np.float32)


def _face(size: float = 50.0, **kw) -> Face:
    return Face(bbox=[10, 10, 10 + size, 10 + size], score=0.9, kps=KPS, **kw)


def test_draw_kps_dots_limbs_and_background():
    image = draw_kps((128, 100), KPS)
    assert image.shape == (100, 128, 3) and image.dtype == np.uint8
    for (x, y), color in zip(KPS.astype(int), KPS_COLORS, strict=True):
        assert tuple(image[y, x]) == color  # dots on top, full intensity
    mid = ((KPS[0] + KPS[2]) / 2).astype(int)  # on the eye-nose limb, between the dots
    assert tuple(image[mid[1], mid[0]]) == (153, 0, 0)  # 255 * 0.6, truncated
    assert image[0, 0].tolist() == [0, 0, 0] and image[-1, -1].tolist() == [0, 0, 0]
    assert draw_kps((10, 10), KPS * 0 - 50).max() == 0  # everything off-canvas: nothing drawn, no error
    with pytest.raises(ValueError, match="5 finite"):
        draw_kps((64, 64), KPS[:4])


def _cv2_draw_kps(size, kps):
    cv2 = pytest.importorskip("cv2")
    w, h = size
    out = np.zeros([h, w, 3])
    for a, b in ((0, 2), (1, 2), (3, 2), (4, 2)):
        x, y = kps[[a, b], 0], kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        poly = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), 4), int(angle), 0, 360, 1)
        out = cv2.fillConvexPoly(out.copy(), poly, KPS_COLORS[a])
    out = (out * 0.6).astype(np.uint8)
    for i, (x, y) in enumerate(kps):
        out = cv2.circle(out.copy(), (int(x), int(y)), 10, KPS_COLORS[i], -1)
    return out


def test_draw_kps_equals_opencv_on_random_and_clipped_layouts():
    """OpenCV is not a dependency of the pack; where a test environment has it, compare pixel for pixel."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        w, h = int(rng.integers(24, 200)), int(rng.integers(24, 200))
        kps = rng.uniform(-30, max(w, h) + 30, (5, 2))  # some limbs and dots leave the canvas
        assert np.array_equal(draw_kps((w, h), kps), _cv2_draw_kps((w, h), kps))


def test_largest_face_and_no_face():
    small, big = _face(30), _face(80)
    assert largest_face([small, big]) is big
    with pytest.raises(NoFaceError, match="No face found in image 2 \\(64x48 px\\)"):
        largest_face([], image_index=2, image_size=(48, 64))


def test_identity_embedding_is_the_raw_antelopev2_vector():
    emb = np.arange(512, dtype=np.float32) / 10
    got, note = identity_embedding(_face(embedding=emb, embedding_model="antelopev2/glintr100.onnx"))
    assert note == "" and np.array_equal(got, emb) and abs(np.linalg.norm(got) - 1) > 1  # not normalised
    _, note = identity_embedding(_face(embedding=emb, embedding_model="buffalo_l/w600k_r50.onnx"))
    assert "not antelopev2's glintr100" in note and "buffalo_l" in note
    with pytest.raises(LikenessError, match="128-d \\(dlib_resnet_v1_128\\).*antelopev2"):
        identity_embedding(_face(embedding=np.ones(128), embedding_model="dlib_resnet_v1_128"))
    with pytest.raises(LikenessError, match="has no identity embedding.*backend 'insightface'"):
        identity_embedding(_face())


def test_recipe_landmarks_prefer_106_points_then_map_from_68():
    lm68 = np.zeros((68, 2), np.float32)
    lm68[36:42], lm68[42:48] = KPS[0], KPS[1]
    lm68[48], lm68[54] = KPS[3], KPS[4]
    lm106 = np.zeros((106, 2), np.float32)
    lm106[[33, 35, 36, 37, 39, 40, 41, 42]], lm106[[87, 89, 90, 91, 93, 94, 95, 96]] = KPS[0], KPS[1]
    lm106[56], lm106[69] = KPS[3], KPS[4]
    both = _face(landmarks68=lm68, landmarks106=lm106)
    points, note = recipe_landmarks(both, "pstf")
    assert points.shape == (106, 2) and note == ""
    points, note = recipe_landmarks(_face(landmarks68=lm68), "pstf")
    assert points.shape == (68, 2) and "68-point landmarks" in note
    # the mapping is exact: the 68 points give the eye centres and mouth corners the 106-point recipe uses
    np.testing.assert_allclose(ffhq_quad(lm68)[0], ffhq_quad_from_106(lm106)[0], atol=1e-4)
    assert recipe_landmarks(_face(), "pstf")[1].startswith("pstf recipe aligned from the 5 keypoints")
    assert recipe_landmarks(both, "wplus_adapter")[0].shape == (68, 2)
    with pytest.raises(LikenessError, match="Unknown alignment recipe"):
        recipe_landmarks(both, "nope")


def test_face_landmarks106_are_validated_and_shifted():
    lm106 = np.random.default_rng(1).uniform(0, 50, (106, 2))
    face = _face(landmarks106=lm106)
    moved = face.shifted(5, -3, 2.0)
    np.testing.assert_allclose(moved.landmarks106, lm106 * 2 + [5, -3], atol=1e-4)
    with pytest.raises(ValueError, match="landmarks106 must have shape \\[106,2\\]"):
        _face(landmarks106=np.zeros((68, 2)))


def test_insightface_backend_fills_106_points_from_the_pack(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("insightface")
    from likeness.models.face import create_analyzer
    from likeness.tools.smoke.insightface_pack import write_fake_pack

    write_fake_pack(tmp_path / "models" / "antelopev2")
    image = np.zeros((640, 640, 3), np.uint8)
    image[320:352, 288:320] = 255
    face = create_analyzer("insightface", models_root=tmp_path, pack="antelopev2").detect(image)[0]
    assert face.landmarks106 is not None and face.embedding_model == "antelopev2/glintr100.onnx"
    assert recipe_landmarks(face, "pstf")[1] == ""
    eyes = (
        face.landmarks106[[33, 35, 36, 37, 39, 40, 41, 42]].mean(0),
        face.landmarks106[[87, 89, 90, 91, 93, 94, 95, 96]].mean(0),
    )
    np.testing.assert_allclose(np.stack(eyes), face.kps[:2], atol=0.05)
    (tmp_path / "models" / "antelopev2" / "2d106det.onnx").unlink()
    face = create_analyzer("insightface", models_root=tmp_path, pack="antelopev2").detect(image)[0]
    assert face.landmarks106 is None
    assert "5 keypoints" in recipe_landmarks(face, "pstf")[1]
