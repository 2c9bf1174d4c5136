"""Where Likeness looks for model files, what each file is, and where to get it.

ComfyUI-free: callers pass the search folders per folder key. Inside ComfyUI
they come from ``folder_paths`` (``nodes/folders.py``); from the command line
they are ``<models dir>/<folder key>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingModelError

__all__ = [
    "ModelFolder",
    "ModelFile",
    "FOLDERS",
    "MODEL_FILES",
    "find_file",
    "file_problem",
    "list_files",
    "folder_paths_under",
    "walk_files",
    "walk_folders",
]

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".sft")


@dataclass(frozen=True)
class ModelFolder:
    """A model folder key registered with ComfyUI (``models/<key>``)."""

    key: str
    purpose: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelFile:
    """A published model file a Likeness feature can use.

    Attributes:
        folder: folder key the file belongs in.
        filename: official file name (any name works; this is what we look for).
        what: one-line description.
        source: official download location.
        licence: licence of the weights (users must respect it; we never bundle them).
        needed_for: the nodes that need it.
        required: False when the feature works without it (with a documented fallback).
        directory: True when the "file" is a folder (insightface model packs).
    """

    folder: str
    filename: str
    what: str
    source: str
    licence: str
    needed_for: str
    required: bool = True
    directory: bool = False


FOLDERS: dict[str, ModelFolder] = {
    f.key: f
    for f in (
        ModelFolder("e4e", "e4e encoder (+ StyleGAN2 decoder) checkpoints", CHECKPOINT_EXTENSIONS),
        ModelFolder("wplus", "W+ adapter weights for SD1.5", CHECKPOINT_EXTENSIONS),
        ModelFolder(
            "likeness_directions",
            "attribute directions in W+",
            CHECKPOINT_EXTENSIONS + (".npy", ".json", ".csv", ".tsv", ".txt"),
        ),
        ModelFolder("insightface", "insightface model packs (models/<name>/*.onnx)", (".onnx",)),
        ModelFolder("face_parsing", "face parsing networks for background whitening", CHECKPOINT_EXTENSIONS),
        ModelFolder("pstf", "PSTF-AttControl adapter weights for SDXL", CHECKPOINT_EXTENSIONS),
        ModelFolder("likeness_wplus", "saved identities: W+ codes from Save W+", (".safetensors", ".pt", ".pth")),
    )
}

_WPLUS_RELEASE = "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/"

MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        "e4e",
        "e4e_ffhq_encode.pt",
        "e4e FFHQ inversion encoder + StyleGAN2 FFHQ 1024 decoder (~1.1 GB)",
        _WPLUS_RELEASE + "e4e_ffhq_encode.pt (also the Google Drive link in omertov/encoder4editing's README)",
        "MIT (omertov/encoder4editing)",
        "Likeness Load e4e, Invert Face, Preview W+",
    ),
    ModelFile(
        "wplus",
        "wplus_adapter.bin",
        "W+ adapter stage 2 (in-the-wild, text-disentangled; the main model)",
        _WPLUS_RELEASE + "wplus_adapter.bin",
        "NTU S-Lab License 1.0: NON-COMMERCIAL use only",
        "Likeness Load W+ Adapter",
    ),
    ModelFile(
        "wplus",
        "wplus_adapter_stage1.bin",
        "W+ adapter stage 1 (face-only images)",
        _WPLUS_RELEASE + "wplus_adapter_stage1.bin",
        "NTU S-Lab License 1.0: NON-COMMERCIAL use only",
        "Likeness Load W+ Adapter",
        required=False,
    ),
    ModelFile(
        "face_parsing",
        "parse_multi_iter_90000.pth",
        "PSFRGAN ParseNet (19 classes) for background whitening before inversion",
        "https://github.com/chaofengc/PSFRGAN/releases/download/v0.1.0/parse_multi_iter_90000.pth",
        "PSFRGAN repository licence (research code; check before commercial use)",
        "Likeness Invert Face (whitening=parsenet; a landmark-hull mask works without it)",
        required=False,
    ),
    ModelFile(
        "insightface",
        "models/antelopev2",
        "insightface antelopev2 pack (detection + glintr100 ArcFace); unzip so the .onnx files sit directly in "
        "models/antelopev2/",
        "insightface model zoo (manual download; the automatic download URL is dead)",
        "insightface pretrained models: NON-COMMERCIAL research use only",
        "Likeness Face Analyzer (backend=insightface); the embedded backend works without it",
        required=False,
        directory=True,
    ),
    ModelFile(
        "insightface",
        "models/buffalo_l",
        "insightface buffalo_l pack (SCRFD detection + ArcFace r50)",
        "https://github.com/deepinsight/insightface/releases (model-zoo buffalo_l.zip)",
        "insightface pretrained models: NON-COMMERCIAL research use only",
        "Likeness Face Analyzer (backend=insightface); the embedded backend works without it",
        required=False,
        directory=True,
    ),
    ModelFile(
        "likeness_directions",
        "encoder4editing/",
        "e4e InterFaceGAN age/smile/pose + GANSpace ffhq_pca.pt",
        "https://github.com/omertov/encoder4editing/tree/main/editings",
        "MIT",
        "Likeness Load Directions",
        required=False,
        directory=True,
    ),
    ModelFile(
        "likeness_directions",
        "w-plus-adapter/",
        "w-plus-adapter w_direction/ (GANSpace configs, seeprettyface latent_directions)",
        "https://github.com/csxmli2016/w-plus-adapter/tree/main/w_direction",
        "S-Lab NC; latent_directions/*.npy Nvidia Source Code License-NC: NON-COMMERCIAL",
        "Likeness Load Directions",
        required=False,
        directory=True,
    ),
    ModelFile(
        "likeness_directions",
        "PreciseControl/all_delta_w_dict.json",
        "PreciseControl per-layer W+ deltas (used by PSTF-AttControl)",
        "https://github.com/rishubhpar/PreciseControl (all_delta_w_dict.json)",
        "MIT",
        "Likeness Load Directions",
        required=False,
    ),
    ModelFile(
        "pstf",
        "pytorch_model.bin",
        "PSTF-AttControl adapter (no official release: train it or bring your own)",
        "not published by UnicomAI/PSTF-AttControl; see the README",
        "code MIT; weights: whoever trained them",
        "PSTF nodes",
        required=False,
    ),
)


def folder_paths_under(models_dir: str | Path) -> dict[str, list[Path]]:
    """Search paths for every folder key below one models directory."""
    root = Path(models_dir)
    return {key: [root / key] for key in FOLDERS}


def walk_folders(base: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, sorted file names)`` for ``base`` and every folder below it, following symlinks.

    ``Path.rglob`` does not follow directory symlinks on Python < 3.13 (users link model folders
    in); a folder reached twice through links is visited once.
    """
    seen: set[str] = set()
    for root, dirs, files in os.walk(base, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield Path(root), sorted(files)


def walk_files(base: Path) -> list[Path]:
    """Every file below ``base``, sorted (see :func:`walk_folders`)."""
    return sorted(root / f for root, files in walk_folders(base) for f in files)


def list_files(folder: str, search_paths: Mapping[str, Sequence[Path]]) -> list[str]:
    """Relative names of files with the folder's extensions, across its search paths."""
    exts = FOLDERS[folder].extensions
    names: list[str] = []
    for base in search_paths.get(folder, ()):
        base = Path(base)
        if not base.is_dir():
            continue
        for p in walk_files(base):
            rel = p.relative_to(base).as_posix()
            if p.suffix.lower() in exts and rel not in names:
                names.append(rel)
    return names


def _known(folder: str, name: str) -> Iterable[ModelFile]:
    return [m for m in MODEL_FILES if m.folder == folder and (not name or m.filename == name)]


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a model file, or None when it is a regular file (or simply absent).

    A folder, a broken symbolic link and a special file (device, pipe, socket) each get their own reason.
    """
    path = Path(path)
    if path.is_file():
        return None
    if path.is_symlink() and not path.exists():
        return f"{path} is a broken symbolic link: it points to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if path.exists():
        return f"{path} is not a regular file (a device, pipe or socket)"
    return None


def find_file(folder: str, name: str, search_paths: Mapping[str, Sequence[Path]]) -> Path:
    """Resolve ``name`` inside the folder key's search paths: the first **regular file** of that name.

    A folder or a broken symbolic link of that name is passed over (so it never hides the real file in
    a later search path) and named in the error when no regular file is found.

    Args:
        folder: folder key, e.g. ``"e4e"``.
        name: file name relative to the folder (sub-folders allowed; never ``..`` or absolute).
        search_paths: ``{folder key: [directories]}`` in search order.

    Raises:
        MissingModelError: listing every folder searched, what stood in the way, the expected file
            names and where to download them.
    """
    if folder not in FOLDERS:
        raise KeyError(f"unknown model folder key {folder!r}; known: {sorted(FOLDERS)}")
    if not name or Path(name).is_absolute() or ".." in Path(name.replace("\\", "/")).parts:
        raise MissingModelError(
            f"Model file name {name!r} is not a name inside the '{folder}' folder; choose a file from the list."
        )
    bases = [Path(b) for b in search_paths.get(folder, ())]
    problems = []
    for base in bases:
        candidate = base / name
        if candidate.is_file():
            return candidate
        problem = file_problem(candidate)
        if problem:
            problems.append(problem)
    known = list(_known(folder, name)) or list(_known(folder, ""))
    searched = (
        "\n".join(f"  - {b}{'' if b.is_dir() else ' (does not exist)'}" for b in bases) or "  (no folders registered)"
    )
    hints = "\n".join(
        f"  - {m.filename}: {m.what}\n    get it from {m.source}\n    licence: {m.licence}" for m in known
    )
    found = "".join(f"\nFound instead: {p}; remove or replace it." for p in problems)
    raise MissingModelError(
        f"Model file {name!r} not found in the '{folder}' folder.{found}\nSearched:\n{searched}\n"
        f"Expected file(s):\n{hints}\n"
        f"Put the file in one of the searched folders (or add an entry '{folder}:' to "
        "extra_model_paths.yaml) and press 'Refresh' in ComfyUI."
    )
