"""Inversion and editing nodes called in-process: photo -> W+ -> edit -> preview, save/load, no-face policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def photos(reference_dir):
    def load(name):
        rgb = np.array(Image.open(reference_dir / "faces" / name).convert("RGB"))
        return torch.from_numpy(rgb).float() / 255.0

    return load("astronaut.png")[None], load("grace_hopper.png")[None]


@pytest.fixture(scope="module")
def e4e(comfy_env):
    from likeness.nodes.inversion_nodes import LikenessLoadE4E

    return LikenessLoadE4E.execute("e4e_ffhq_encode.pt", "cpu", "fp32").args[0]


def _invert(e4e, image, **kw):
    from likeness.nodes.inversion_nodes import LikenessInvertFace

    options = dict(
        recipe="e4e_official",
        whitening="none",
        selection="largest",
        face_index=0,
        on_no_face="error",
        reconstruct=False,
    )
    options.update(kw)
    return LikenessInvertFace.execute(e4e, image, **options).args


def test_photo_to_wplus_edit_and_preview(e4e, photos, tmp_path):
    from likeness.nodes.directions_nodes import LikenessLoadDirections
    from likeness.nodes.editing_nodes import LikenessEditAttributes
    from likeness.nodes.inversion_nodes import LikenessPreviewWPlus

    wplus, aligned, recon, info = _invert(e4e, photos[0], recipe="wplus_adapter", whitening="landmark_hull")
    assert wplus.codes.shape == (1, 18, 512) and torch.isfinite(wplus.codes).all()
    assert aligned.shape == (1, 256, 256, 3)
    assert "whitening landmark_hull" in info and "recipe wplus_adapter" in info
    assert wplus.meta["recipe"] == "wplus_adapter" and len(wplus.meta["source_sha256"][0]) == 16
    # the whitened background is white (+1 -> 1.0) in the crop fed to e4e
    assert aligned[0, :8, :8].min() > 0.99

    directions = LikenessLoadDirections.execute("encoder4editing/interfacegan").args[0]
    slots = {"edits": "2", "attribute_1": "age", "strength_1": 3.0, "rows_1": "default"}
    slots |= {"attribute_2": "smile", "strength_2": -1.0, "rows_2": "0-7"}
    edited, summary = LikenessEditAttributes.execute(wplus, directions, slots, "", "offset").args[:2]
    age, smile = directions["age"].vector, directions["smile"].vector
    expected = wplus.codes + 3.0 * age
    expected[:, :8] += -1.0 * smile[:8]
    torch.testing.assert_close(edited.codes, expected, rtol=0, atol=1e-5)
    assert "age +3 (rows default)" in summary and "smile -1 (rows 0-7)" in summary
    one_slot = {"edits": "1", "attribute_1": "age", "strength_1": 0.0, "rows_1": "default"}
    zero = LikenessEditAttributes.execute(wplus, directions, one_slot).args[0]
    assert torch.equal(zero.codes, wplus.codes)

    preview = LikenessPreviewWPlus.execute(e4e, edited, 64).args[0]
    assert preview.shape == (1, 64, 64, 3) and 0 <= preview.min() and preview.max() <= 1


def test_unknown_attribute_lists_the_available_ones(e4e, photos):
    from likeness.models.errors import LikenessError
    from likeness.nodes.directions_nodes import LikenessLoadDirections
    from likeness.nodes.editing_nodes import LikenessEditAttributes

    wplus = _invert(e4e, photos[1])[0]
    directions = LikenessLoadDirections.execute("encoder4editing/interfacegan").args[0]
    with pytest.raises(
        LikenessError, match=r"'glasses' is not in the set 'encoder4editing/interfacegan'; it has: .*age"
    ):
        slot = {"edits": "1", "attribute_1": "glasses", "strength_1": 1.0, "rows_1": "default"}
        LikenessEditAttributes.execute(wplus, directions, slot)


def test_sweep_batch_and_labels_feed_one_code_per_latent(e4e, photos):
    from likeness.nodes.directions_nodes import LikenessLoadDirections
    from likeness.nodes.editing_nodes import LikenessAttributeSweep

    wplus = _invert(e4e, photos[0])[0]
    directions = LikenessLoadDirections.execute("encoder4editing/interfacegan").args[0]
    out, labels, batch = LikenessAttributeSweep.execute(wplus, directions, "age", "-2:2:2", "default").args
    assert batch == 3 and out.codes.shape == (3, 18, 512)
    from likeness.models.directions import format_strength

    assert labels.splitlines() == [f"age={format_strength(s)}" for s in (-2.0, 0.0, 2.0)]
    assert out.labels == tuple(labels.splitlines())
    torch.testing.assert_close(out.codes[1], wplus.codes[0], rtol=0, atol=0)


def test_save_and_load_wplus_round_trip(e4e, photos, comfy_env):
    from pathlib import Path

    import folder_paths

    from likeness.nodes.wplus_file_nodes import LikenessLoadWPlus, LikenessSaveWPlus

    wplus = _invert(e4e, photos[1])[0]
    first = Path(LikenessSaveWPlus.execute(wplus, "tests/../test identity:1").args[0])
    second = Path(LikenessSaveWPlus.execute(wplus, "tests/../test identity:1").args[0])
    out_dir = Path(folder_paths.get_output_directory()) / "likeness_wplus"
    assert first.parent == second.parent == out_dir / "tests"  # '..' dropped: nothing escapes the folder
    assert first.name.startswith("test identity_1_") and first.name.endswith("_.safetensors")
    assert int(second.name.split("_")[-2]) == int(first.name.split("_")[-2]) + 1  # ComfyUI's counter
    back = LikenessLoadWPlus.execute(first.relative_to(out_dir).as_posix()).args[0]
    assert torch.equal(back.codes, wplus.codes) and back.meta["recipe"] == "e4e_official"


def test_no_face_policies_on_a_blank_image(e4e, photos, sd15_checkpoint, tmp_path):
    from likeness.models.errors import InputError, NoFaceError
    from likeness.nodes.patching import LoadedWPlusAdapter
    from likeness.nodes.wplus_file_nodes import LikenessSaveWPlus
    from likeness.nodes.wplus_nodes import LikenessApplyWPlusAdapter, LikenessLoadWPlusAdapter

    blank = torch.zeros(1, 96, 128, 3)
    with pytest.raises(NoFaceError, match=r"batch image 0 \(128x96 px\)"):
        _invert(e4e, blank)
    with pytest.raises(NoFaceError, match=r"^Invert Face: no usable face in any of the 1 image.*'pass-through'"):
        _invert(e4e, blank, on_no_face="skip")  # skip would leave an empty W+ batch
    batch = torch.cat([torch.zeros_like(photos[0]), photos[0]])
    skipped = _invert(e4e, batch, on_no_face="skip")
    assert skipped[0].batch == 1 and skipped[0].labels == ("image 1",) and "image 0: skipped" in skipped[3]
    assert skipped[1].shape == (1, 256, 256, 3)
    mixed = _invert(e4e, batch, on_no_face="pass-through")  # image 0 keeps its place, with no code
    assert mixed[0].batch == 2 and mixed[0].absent == (0,) and mixed[0].labels == ("image 0 (no face)", "image 1")
    torch.testing.assert_close(mixed[0].codes[1], skipped[0].codes[0])
    assert mixed[1].shape == mixed[2].shape == (2, 256, 256, 3) and torch.equal(mixed[1][1], skipped[1][0])
    passed = _invert(e4e, blank, on_no_face="pass-through")
    assert passed[0].batch == 1 and passed[0].present == () and "passed through" in passed[3]
    assert passed[1].shape == (1, 256, 256, 3)
    with pytest.raises(InputError, match=r"^Save W\+ input 'wplus': the W\+ input holds no code"):
        LikenessSaveWPlus.execute(passed[0], "nothing")
    adapter: LoadedWPlusAdapter = LikenessLoadWPlusAdapter.execute("wplus_adapter.bin").args[0]
    model = sd15_checkpoint[0]
    out_model, warning = LikenessApplyWPlusAdapter.execute(model, adapter, passed[0], 1.0, 0.2, 1.0).args
    assert out_model is model and "NOT applied" in warning
    patched, warning = LikenessApplyWPlusAdapter.execute(model, adapter, mixed[0], 1.0, 0.2, 1.0).args
    assert patched is not model and "latent(s) [0] have no W+ code" in warning


def test_bf16_on_a_cpu_without_native_bf16_runs_fp32_and_says_so(comfy_env, photos, monkeypatch):
    from likeness.models.inversion import precision
    from likeness.nodes.inversion_nodes import LikenessLoadE4E

    monkeypatch.setattr(precision, "cpu_low_precision_support", lambda: {"bf16": False, "fp16": False})
    e4e = LikenessLoadE4E.execute("e4e_ffhq_encode.pt", "cpu", "bf16").args[0]
    assert e4e.dtype == torch.float32
    wplus, _, _, info = _invert(e4e, photos[0])
    assert "e4e precision bf16 requested" in info and "ran in fp32" in info
    assert wplus.codes.dtype == torch.float32 and torch.isfinite(wplus.codes).all()
    monkeypatch.setattr(precision, "cpu_low_precision_support", lambda: {"bf16": True, "fp16": False})
    auto = LikenessLoadE4E.execute("e4e_ffhq_encode.pt", "cpu", "auto").args[0]
    assert auto.dtype == torch.bfloat16 and "auto: bf16" in auto.precision_note
