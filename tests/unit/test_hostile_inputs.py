"""Hostile but realistic inputs at the ComfyUI-free level: file lookups, odd images, empty batches, texts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from likeness.models.errors import CheckpointError, InputError, MissingModelError, NoFaceError, a_or_an
from likeness.models.face import Face, apply_policy
from likeness.models.files.checkpoints import load_file
from likeness.models.files.registry import file_problem, find_file
from likeness.models.images import check_image_batch, fit_square, join_alpha, split_alpha


def _face() -> Face:
    kps = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float32)
    return Face(bbox=np.array([10, 10, 90, 110], dtype=np.float32), score=0.9, kps=kps)


# ---- files --------------------------------------------------------------------------------------------------


def test_a_folder_named_like_the_file_never_hides_the_real_file(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "e4e_ffhq_encode.pt").mkdir(parents=True)
    second.mkdir()
    (second / "e4e_ffhq_encode.pt").write_bytes(b"real")
    assert find_file("e4e", "e4e_ffhq_encode.pt", {"e4e": [first, second]}) == second / "e4e_ffhq_encode.pt"


def test_a_folder_or_a_broken_link_alone_gets_its_own_message(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "e4e_ffhq_encode.pt").mkdir(parents=True)
    second.mkdir()
    (second / "e4e_ffhq_encode.pt").symlink_to(tmp_path / "gone.pt")
    with pytest.raises(MissingModelError) as err:
        find_file("e4e", "e4e_ffhq_encode.pt", {"e4e": [first, second]})
    text = str(err.value)
    assert f"{first / 'e4e_ffhq_encode.pt'} is a folder, not a file; remove or replace it" in text
    assert f"{second / 'e4e_ffhq_encode.pt'} is a broken symbolic link: it points to {tmp_path / 'gone.pt'}" in text
    with pytest.raises(MissingModelError, match="is a folder, not a file. Replace it with the model file."):
        load_file(first / "e4e_ffhq_encode.pt")
    with pytest.raises(MissingModelError, match="is a broken symbolic link"):
        load_file(second / "e4e_ffhq_encode.pt")
    assert file_problem(tmp_path / "absent.pt") is None and file_problem(second) is not None


@pytest.mark.parametrize("name", ["../secret.pt", "/etc/passwd", "a/../../b.pt", ""])
def test_names_never_leave_the_model_folders(tmp_path, name):
    with pytest.raises(MissingModelError, match="is not a name inside the 'e4e' folder"):
        find_file("e4e", name, {"e4e": [tmp_path]})


def test_a_pickled_npy_is_refused_as_unsafe_not_called_corrupt(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"run": "code"}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError) as err:
        load_file(tmp_path / "evil.npy")
    text = str(err.value)
    assert "array of Python objects" in text and "pickle" in text and "truncated" not in text
    (tmp_path / "cut.npy").write_bytes((tmp_path / "evil.npy").read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_file(tmp_path / "cut.npy")


def test_unusable_direction_files_are_logged_once_per_file_version(tmp_path, caplog):
    from likeness.models.directions import discover_directions

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with caplog.at_level(logging.WARNING, logger="likeness.models.directions.discovery"):
        for _ in range(3):  # three UI refreshes
            assert len(discover_directions([tmp_path]).problems) == 1
        assert sum("bad.pt" in r.getMessage() for r in caplog.records) == 1
        (tmp_path / "bad.pt").write_bytes(b"still not a checkpoint, longer")  # a new version is reported again
        discover_directions([tmp_path])
        assert sum("bad.pt" in r.getMessage() for r in caplog.records) == 2


# ---- images -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_channel_count_comfyui_makes_is_read_the_same_way(channels):
    image = torch.rand(2, 8, 6, channels)
    assert check_image_batch(image, "x") == channels
    rgb, alpha = split_alpha(image, "x")
    assert rgb.shape == (2, 8, 6, 3)
    assert torch.equal(rgb[..., 0], image[..., 0]) and torch.equal(rgb[..., 2], image[..., 0 if channels < 3 else 2])
    if channels in (2, 4):
        assert torch.equal(alpha[..., 0], image[..., -1])
        assert torch.equal(join_alpha(rgb, alpha)[..., 3], image[..., -1])
    else:
        assert alpha is None and join_alpha(rgb, None) is rgb


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.zeros(0, 8, 8, 3), r"^Face Refine input 'image': the IMAGE batch is empty \(0 images\).*pass-through"),
        (torch.zeros(1, 8, 8, 5), r"images with 5 channels are not supported"),
        (torch.zeros(1, 0, 8, 3), r"the images are empty \(8x0 pixels\)"),
        (torch.zeros(8, 8, 3), r"expected an IMAGE batch \[B,H,W,C\]"),
        (np.zeros((1, 8, 8, 3)), r"expected an IMAGE batch"),
    ],
)
def test_odd_images_are_refused_before_any_work(image, message):
    with pytest.raises(InputError, match=message):
        check_image_batch(image, "Face Refine input 'image'")


def test_fit_square_keeps_the_aspect_with_grey_borders():
    out = fit_square(torch.ones(10, 20, 3), 16)
    assert out.shape == (16, 16, 3)
    assert torch.allclose(out[8], torch.ones(16, 3)) and torch.allclose(out[0], torch.full((16, 3), 0.5))


# ---- empty batches and no-face texts -------------------------------------------------------------------------


def test_skip_that_would_leave_nothing_fails_and_suggests_pass_through():
    with pytest.raises(NoFaceError) as err:
        apply_policy([[], []], "skip", [(10, 20), (10, 20)], where="Face Refine")
    text = str(err.value)
    assert text.startswith("Face Refine: no usable face in any of the 2 image(s)")
    assert "Set on_no_face to 'pass-through'" in text
    kept, report = apply_policy([[], [_face()]], "skip", [(10, 20), (10, 20)])
    assert kept == [1] and list(report.skipped) == [0]
    kept, report = apply_policy([[], []], "pass-through", [(10, 20), (10, 20)])
    assert kept == [] and sorted(report.passed_through) == [0, 1]


@pytest.mark.parametrize(("backend", "other"), [("embedded", "the insightface"), ("insightface", "the embedded")])
def test_no_face_error_names_the_other_backend_once(backend, other):
    for given, expected in ((backend, f"; {other} backend;"), (None, "; another backend;")):
        with pytest.raises(NoFaceError) as err:
            apply_policy([[]] * 30, "error", [(10, 20)] * 30, backend=given)
        text = str(err.value)
        assert expected in text and "the the" not in text
        assert "(also images [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... and 19 more])" in text


def test_articles_follow_the_sound():
    assert a_or_an("e4e FFHQ encoder (e4e_ffhq_encode.pt)") == "an e4e FFHQ encoder (e4e_ffhq_encode.pt)"
    assert a_or_an("W+ adapter (SD1.5)") == "a W+ adapter (SD1.5)"
    assert a_or_an("SD1.5 model") == "an SD1.5 model" and a_or_an("int") == "an int" and a_or_an("list") == "a list"
    assert a_or_an("unit normal") == "a unit normal" and a_or_an("OrderedDict") == "an OrderedDict"


def test_wrong_e4e_file_says_an_e4e(tmp_path):
    from likeness.models.inversion.e4e_model import load_e4e

    torch.save(torch.zeros(3), tmp_path / "e4e.pt")
    with pytest.raises(CheckpointError, match=r"is not an e4e FFHQ encoder"):
        load_e4e(tmp_path / "e4e.pt")
    torch.save({"state_dict": {"x": torch.zeros(1)}, "latent_avg": torch.zeros(18, 512)}, tmp_path / "e4e2.pt")
    with pytest.raises(CheckpointError, match=r"is not an e4e FFHQ encoder"):
        load_e4e(tmp_path / "e4e2.pt")


def test_rows_beyond_the_range_are_quoted_as_written_not_expanded():
    from likeness.models.directions import resolve_rows
    from likeness.models.errors import LikenessError

    for spec in ("99-200", "0-999999999999"):
        with pytest.raises(LikenessError) as err:
            resolve_rows(spec)
        assert f"'{spec}' is not a row between 0 and 17" in str(err.value) and len(str(err.value)) < 250
    with pytest.raises(LikenessError, match=r"got 18, 19, 20, 21, 22 and 177 more"):
        resolve_rows(range(200))
