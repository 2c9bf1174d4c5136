"""``run_demo`` end to end on a real photo (../shared/reference/faces) with smoke models written into tmp_path.

The e4e architecture is fixed (IR-SE-50 + StyleGAN2-1024), so this is the full-size pipeline:
writing the 1.2 GB smoke e4e file, loading it, encoding and decoding 4 previews. Measured
~30-40 s on 2 shared CPU cores. The smoke outputs are noise, so images are checked for
size and consistency, not content.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from likeness.models.inversion.codes import load_wplus
from likeness.tools.demo.run import LABEL_BAND, run_demo

pytest.importorskip("yuface")


@pytest.fixture(scope="module")
def demo(reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    report = run_demo(reference_dir / "faces" / "grace_hopper.png", root / "models", root / "out", strengths="-3:3:3")
    yield report, root, time.perf_counter() - start, reference_dir
    shutil.rmtree(root / "models")  # the 1.2 GB smoke e4e file; pytest keeps the last 3 tmp dirs


def test_demo_writes_files_of_the_documented_sizes(demo):
    report, root, seconds, _ = demo
    out = root / "out"
    expected = {"aligned.png": (512, 512), "e4e_input.png": (256, 256), "reconstruction.png": (256, 256),
                "sweep_age.png": (3 * 256, 256 + LABEL_BAND)}  # fmt: skip
    for name, size in expected.items():
        with Image.open(out / name) as img:
            assert img.size == size, name
            assert img.mode == "RGB", name
    assert (out / "report.txt").is_file() and (out / "identity.safetensors").is_file()
    assert set(report.files) == {"identity", "aligned", "e4e_input", "reconstruction", "sweep", "report"}
    # smoke models only: e4e + directions, never the 2 GB SD checkpoint or the W+ adapter
    models = root / "models"
    assert (models / "e4e" / "e4e_ffhq_encode.pt").is_file()
    assert sorted(p.name for p in (models / "likeness_directions").rglob("*.pt")) == ["age.pt", "pose.pt", "smile.pt"]
    assert not (models / "checkpoints").exists() and not (models / "wplus").exists()
    assert seconds < 120, f"demo took {seconds:.1f} s"


def test_demo_report_names_recipe_whitening_and_smoke(demo):
    report, root, _, _ = demo
    text = (root / "out" / "report.txt").read_text()
    assert "recipe:     wplus_adapter" in text
    assert "whitening:  landmark_hull" in text  # no ParseNet file in the fresh models dir
    assert "WARNING: SMOKE MODELS" in text and "NOISE" in text
    assert "e4e          SMOKE (random weights)" in text and "directions   SMOKE (random weights)" in text
    assert "[written by this run]" in text
    for stage in ("models", "detect", "whitening", "encode", "decode", "total"):
        assert f"\n  {stage:<14} " in text, stage
    assert report.smoke and report.landmark_kind == "lm68" and report.faces_found == 1
    assert report.direction == "encoder4editing/interfacegan:age"
    assert report.labels == ["age=-3.0", "age=+0.0", "age=+3.0"]


def test_demo_face_box_matches_the_reference_detection(demo):
    report, _, _, reference_dir = demo
    ref = json.loads((reference_dir / "faces" / "reference_detections.json").read_text())
    box = ref["images"]["grace_hopper.png"]["yuface"][0]["box_xyxy"]
    assert np.abs(np.array(report.face_box) - np.array(box)).max() <= 20  # SOURCES.md: boxes +-20 px


def test_identity_loads_back_and_sweep_centre_is_the_reconstruction(demo):
    report, root, _, _ = demo
    codes = load_wplus(root / "out" / "identity.safetensors")
    assert tuple(codes.codes.shape) == (1, 18, 512)
    assert codes.labels == ("identity",)
    assert codes.meta["recipe"] == "wplus_adapter" and codes.meta["smoke"] is True
    assert bool(codes.codes.isfinite().all())
    strip = np.asarray(Image.open(root / "out" / "sweep_age.png"))
    recon = np.asarray(Image.open(root / "out" / "reconstruction.png")).astype(int)
    tiles = [strip[LABEL_BAND:, i * 256 : (i + 1) * 256].astype(int) for i in range(3)]
    # strength 0 is the identity code itself (same batch decode): equal to 1 grey level
    assert np.abs(tiles[1] - recon).max() <= 1
    # +-3 along a unit direction changes the (noise) image
    assert np.abs(tiles[0] - recon).mean() > 1 and np.abs(tiles[2] - recon).mean() > 1
    # the label band is white apart from the text
    assert (strip[:LABEL_BAND] == 255).mean() > 0.8
