"""Face nodes called directly in-process on the reference photos; interruption is honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def _photo(reference_dir, name):
    rgb = np.array(Image.open(reference_dir / "faces" / name).convert("RGB"))
    return torch.from_numpy(rgb).float()[None] / 255.0


@pytest.fixture(scope="module")
def analyzer(comfy_env):
    from likeness.nodes.face_nodes import LikenessFaceAnalyzer

    return LikenessFaceAnalyzer.execute("auto", "antelopev2", "cpu", 640, 0.5).args[0]


def test_auto_backend_without_insightface_packs_is_the_embedded_one(analyzer):
    assert "embedded" in analyzer.name


def test_detect_faces_boxes_landmarks_preview_and_count(analyzer, reference_dir):
    from likeness.nodes.face_nodes import LikenessDetectFaces

    image = torch.cat([_photo(reference_dir, "astronaut.png"), torch.zeros(1, 512, 512, 3)])
    faces, preview, count = LikenessDetectFaces.execute(image, analyzer).args
    assert count == 1 and len(faces.faces[0]) == 1 and faces.faces[1] == []
    face = faces.faces[0][0]
    x1, y1, x2, y2 = face.bbox
    assert 150 < (x1 + x2) / 2 < 290 and 60 < (y1 + y2) / 2 < 180  # the astronaut's face
    assert face.kps.shape == (5, 2) and face.landmarks68.shape == (68, 2) and face.embedding.shape == (128,)
    assert preview.shape == image.shape
    changed = (preview[0] - image[0]).abs().sum(-1) > 0
    assert changed[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1].any()  # boxes and points drawn on the face
    assert not changed[:40, :40].any()  # and nothing far away from it
    assert torch.equal(preview[1], image[1])


def test_face_mask_regions_grow_and_feather(analyzer, reference_dir):
    from likeness.nodes.face_nodes import LikenessDetectFaces, LikenessFaceMask

    faces = LikenessDetectFaces.execute(_photo(reference_dir, "grace_hopper.png"), analyzer).args[0]
    face = LikenessFaceMask.execute(faces, "face", 0, 0.0).args[0]
    grown = LikenessFaceMask.execute(faces, "face", 10, 0.0).args[0]
    eyes = LikenessFaceMask.execute(faces, "eyes", 0, 0.0).args[0]
    soft = LikenessFaceMask.execute(faces, "face", 0, 8.0).args[0]
    assert face.shape == (1, 600, 512)  # grace_hopper.png is 512 wide, 600 high
    assert grown.sum() > face.sum() > eyes.sum() > 0
    assert ((eyes > 0) <= (grown > 0)).all()  # the eyes lie inside the (grown) face
    assert ((soft > 0) & (soft < 1)).sum() > 0 and soft.max() <= 1 and soft.min() >= 0


def test_identity_score_orders_same_and_different_person(analyzer, reference_dir):
    from likeness.nodes.face_nodes import LikenessIdentityScore

    grace = _photo(reference_dir, "grace_hopper.png")
    flipped = torch.flip(grace, dims=[2])
    astronaut = torch.zeros(1, 600, 512, 3)
    astronaut[:, :512] = _photo(reference_dir, "astronaut.png")  # padded, not stretched
    scores, table = LikenessIdentityScore.execute(grace, torch.cat([flipped, astronaut]), analyzer, "error").args
    assert scores[0] > scores[1]
    lines = table.splitlines()
    assert lines[2].endswith("same person") and not lines[3].endswith("same person")  # dlib: same below L2 0.6


def test_identity_score_honours_each_no_face_policy(analyzer, reference_dir):
    from likeness.models.errors import NoFaceError
    from likeness.nodes.face_nodes import LikenessIdentityScore

    grace = _photo(reference_dir, "grace_hopper.png")
    batch = torch.cat([torch.zeros_like(grace), torch.flip(grace, dims=[2])])
    with pytest.raises(NoFaceError, match="batch image 0"):
        LikenessIdentityScore.execute(grace, batch, analyzer, "error")
    scores, table = LikenessIdentityScore.execute(grace, batch, analyzer, "skip").args
    assert len(scores) == 1 and scores[0] > 0.5  # the blank image is dropped, the flipped photo scored
    rows = [line.split() for line in table.splitlines()[2:] if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1"] and "image 0: skipped" in table
    scores, table = LikenessIdentityScore.execute(grace, batch, analyzer, "pass-through").args
    assert len(scores) == 2 and scores[0] != scores[0] and "image 0: passed through" in table  # NaN for no face


def test_interrupting_a_batch_stops_the_node(analyzer, reference_dir):
    import comfy.model_management

    from likeness.nodes.face_nodes import LikenessDetectFaces

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            LikenessDetectFaces.execute(_photo(reference_dir, "astronaut.png"), analyzer)
    finally:
        comfy.model_management.interrupt_current_processing(False)
