"""FFHQ alignment on the reference photos vs a NumPy/PIL re-statement of the official code.

Images must be bit-identical (both resample with Pillow and pad with the same NumPy float32
expressions); geometry: landmarks mapped with ``aligned_to_source`` land within 1 px of where the
reference's (shrink/crop/pad/quad) chain puts them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from likeness.models.images import to_rgb_uint8
from likeness.models.inversion.align import (
    E4E_OFFICIAL,
    PSTF,
    WPLUS_ADAPTER,
    align_face,
    ffhq_quad,
    ffhq_quad_from_5,
)

_spec = importlib.util.spec_from_file_location(
    "ffhq_reference_impl", Path(__file__).with_name("ffhq_reference_impl.py")
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

PHOTOS = ("astronaut.png", "grace_hopper.png", "camera_profile.png")


@pytest.fixture(scope="module")
def faces(reference_dir: Path) -> dict:
    folder = reference_dir / "faces"
    det = json.loads((folder / "reference_detections.json").read_text())["images"]
    return {name: (Image.open(folder / name), det[name]) for name in PHOTOS}


def _landmarks(det: dict, kind: str) -> np.ndarray:
    return np.asarray(det["dlib"][0]["lm68"] if kind == "lm68" else det["yuface"][0]["kps5"], dtype=np.float64)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("kind", ["lm68", "kps5"])
@pytest.mark.parametrize("recipe", [E4E_OFFICIAL, PSTF], ids=lambda r: r.name)
def test_direct_recipes_match_reference(faces, name, kind, recipe):
    img, det = faces[name]
    lm = _landmarks(det, kind)
    face = align_face(img, lm, recipe)
    quad, qsize = (ffhq_quad if kind == "lm68" else ffhq_quad_from_5)(lm)
    expected = np.asarray(
        ref.align_reference(
            Image.fromarray(to_rgb_uint8(img)),
            quad,
            qsize,
            recipe.output_size,
            recipe.transform_size,
            recipe.enable_padding,
        )
    )
    assert face.image.shape == (recipe.output_size, recipe.output_size, 3)
    np.testing.assert_array_equal(face.image, expected)
    assert face.landmark_kind == kind and face.recipe == recipe.name


@pytest.mark.parametrize("name", ["grace_hopper.png"])
def test_wplus_4096_recipe_matches_reference(faces, name):
    img, det = faces[name]
    lm = _landmarks(det, "lm68")
    face = align_face(img, lm, WPLUS_ADAPTER)
    quad, qsize = ffhq_quad(lm)
    expected = np.asarray(ref.align_reference(Image.fromarray(to_rgb_uint8(img)), quad, qsize, 512, 4096, False))
    assert face.image.shape == (512, 512, 3)
    np.testing.assert_array_equal(face.image, expected)


@pytest.mark.parametrize("recipe", [E4E_OFFICIAL, WPLUS_ADAPTER], ids=lambda r: r.name)
def test_padding_path_matches_reference(faces, recipe):
    """Crop the photo so the face touches the corner: the reflect-pad + blur + median branch runs."""
    img, det = faces["astronaut.png"]
    lm = _landmarks(det, "lm68")
    cut = Image.fromarray(to_rgb_uint8(img)).crop((150, 60, 400, 330))
    lm_cut = lm - [150, 60]
    quad, qsize = ffhq_quad(lm_cut)
    if recipe is WPLUS_ADAPTER:  # padding off: the black-outside branch instead
        cut = cut.crop((30, 20, 250, 270))
        lm_cut = lm_cut - [30, 20]
        quad, qsize = ffhq_quad(lm_cut)
    face = align_face(cut, lm_cut, recipe)
    expected = np.asarray(
        ref.align_reference(cut, quad, qsize, recipe.output_size, recipe.transform_size, recipe.enable_padding)
    )
    np.testing.assert_array_equal(face.image, expected)
    if recipe is WPLUS_ADAPTER:
        assert (face.image.sum(axis=2) == 0).mean() > 0.01  # outside the photo is black


@pytest.mark.parametrize("name", PHOTOS)
def test_landmarks_land_where_the_reference_puts_them(faces, name):
    """Geometry within 1 px: map the quad corners' reference positions through our transform."""
    img, det = faces[name]
    lm = _landmarks(det, "lm68")
    for recipe in (E4E_OFFICIAL, PSTF):
        face = align_face(img, lm, recipe)
        size = recipe.output_size
        # The official QUAD transform maps output pixel centre (i + .5) / size of the quad; the
        # quad corners therefore sit at aligned coordinates (-0.5, -0.5) ... (size - 0.5, size - 0.5).
        corners_aligned = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
        mapped = corners_aligned @ face.aligned_to_source[:2, :2].T + face.aligned_to_source[:2, 2]
        assert np.abs(mapped - face.quad).max() <= 1.0
        back = lm @ face.source_to_aligned[:2, :2].T + face.source_to_aligned[:2, 2]
        np.testing.assert_allclose(back, face.landmarks, atol=1e-9)


def test_five_point_quad_close_to_68_point_quad(faces):
    """Documented in ffhq_quad_from_5: frontal faces within 10 % of qsize, centre within 2 %."""
    report = {}
    for name in PHOTOS:
        _, det = faces[name]
        q68, s68 = ffhq_quad(_landmarks(det, "lm68"))
        q5, _ = ffhq_quad_from_5(_landmarks(det, "kps5"))
        report[name] = (np.linalg.norm(q68 - q5, axis=1).max() / s68, np.linalg.norm(q68.mean(0) - q5.mean(0)) / s68)
    for name in ("astronaut.png", "grace_hopper.png"):
        corner, centre = report[name]
        assert corner <= 0.10 and centre <= 0.02, (name, report[name])
    assert report["camera_profile.png"][1] > 0.1  # profile: documented as unreliable
