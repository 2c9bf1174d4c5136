"""Model folder resolution and the missing-model message."""

from __future__ import annotations

import pytest

from likeness.models.errors import MissingModelError
from likeness.models.files.registry import FOLDERS, MODEL_FILES, find_file, folder_paths_under, list_files


def test_every_known_file_belongs_to_a_registered_folder():
    assert {m.folder for m in MODEL_FILES} <= set(FOLDERS)
    for key in ("e4e", "wplus", "likeness_directions", "insightface", "face_parsing"):
        assert key in FOLDERS


def test_find_file_searches_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a).mkdir()
    (b).mkdir()
    (b / "e4e_ffhq_encode.pt").write_bytes(b"x")
    found = find_file("e4e", "e4e_ffhq_encode.pt", {"e4e": [a, b]})
    assert found == b / "e4e_ffhq_encode.pt"
    (a / "e4e_ffhq_encode.pt").write_bytes(b"y")
    assert find_file("e4e", "e4e_ffhq_encode.pt", {"e4e": [a, b]}) == a / "e4e_ffhq_encode.pt"


def test_missing_file_message_lists_folders_names_and_source(tmp_path):
    paths = folder_paths_under(tmp_path)
    with pytest.raises(MissingModelError) as err:
        find_file("wplus", "wplus_adapter.bin", paths)
    msg = str(err.value)
    assert str(tmp_path / "wplus") in msg and "(does not exist)" in msg
    assert "wplus_adapter.bin" in msg
    assert "github.com/csxmli2016/w-plus-adapter/releases/download/v1/wplus_adapter.bin" in msg
    assert "NON-COMMERCIAL" in msg


def test_list_files_filters_extensions_and_recurses(tmp_path):
    d = tmp_path / "likeness_directions"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "age.pt").write_bytes(b"")
    (d / "notes.md").write_text("x")
    (d / "dirs.npy").write_bytes(b"")
    assert list_files("likeness_directions", {"likeness_directions": [d]}) == ["dirs.npy", "sub/age.pt"]


def test_symlinked_subfolders_are_followed(tmp_path):
    real = tmp_path / "elsewhere" / "encoder4editing"
    real.mkdir(parents=True)
    (real / "age.pt").write_bytes(b"")
    d = tmp_path / "likeness_directions"
    d.mkdir()
    (d / "linked").symlink_to(real, target_is_directory=True)
    (d / "loop").symlink_to(d, target_is_directory=True)  # a cycle is visited once
    assert list_files("likeness_directions", {"likeness_directions": [d]}) == ["linked/age.pt"]
