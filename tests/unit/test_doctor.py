"""The doctor report and CLI: every missing file with its folder and download source, found files with paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from likeness.models.files.doctor import check_models, format_report
from likeness.models.files.registry import MODEL_FILES, folder_paths_under

ROOT = Path(__file__).resolve().parents[2]


def test_empty_models_folder_names_every_missing_file_with_folder_and_source(tmp_path):
    report = format_report(folder_paths_under(tmp_path))
    for spec in MODEL_FILES:
        assert f"MISSING  {spec.filename}" in report
        assert spec.source in report
        assert str(tmp_path / spec.folder) in report
    assert "required file(s) missing" in report


def test_found_files_are_reported_with_their_path(tmp_path):
    (tmp_path / "e4e").mkdir()
    (tmp_path / "e4e" / "e4e_ffhq_encode.pt").write_bytes(b"x")
    (tmp_path / "e4e" / "my_other_encoder.pt").write_bytes(b"x")
    pack = tmp_path / "insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / "scrfd_10g_bnkps.onnx").write_bytes(b"x")
    statuses = {s.spec.filename: s for s in check_models(folder_paths_under(tmp_path))}
    assert statuses["e4e_ffhq_encode.pt"].found_at == tmp_path / "e4e" / "e4e_ffhq_encode.pt"
    assert statuses["models/antelopev2"].found_at == pack
    assert statuses["wplus_adapter.bin"].found_at is None
    report = format_report(folder_paths_under(tmp_path))
    assert f"FOUND    e4e_ffhq_encode.pt  ->  {tmp_path / 'e4e' / 'e4e_ffhq_encode.pt'}" in report
    assert "other    my_other_encoder.pt" in report


def test_cli_doctor_runs_without_comfyui(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "models.cli", "doctor", "--models-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "Likeness doctor" in out and "MISSING  wplus_adapter.bin" in out


def test_cli_doctor_reads_extra_model_paths_yaml(tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    extra = tmp_path / "elsewhere" / "wplus"
    extra.mkdir(parents=True)
    (extra / "wplus_adapter.bin").write_bytes(b"x")
    (comfy / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {tmp_path / 'elsewhere'}\n  wplus: wplus\n")
    out = subprocess.run(
        [sys.executable, "-m", "models.cli", "doctor", "--comfyui", str(comfy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"FOUND    wplus_adapter.bin  ->  {extra / 'wplus_adapter.bin'}" in out
