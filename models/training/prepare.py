"""Photos -> a prepared training dataset (see :mod:`.dataset` for the folder layout).

Per photo: detect faces (one face per photo unless ``multi_face="largest"``), FFHQ-align at the
method's recipe, make the face mask, encode with e4e, and for PSTF keep the ArcFace embedding and
the 5 keypoints mapped into the aligned crop.

* ``wplus`` (csxmli2016/w-plus-adapter): recipe ``wplus_adapter`` (512 px via a 4096 px quad
  transform, no padding; dlib 68 landmarks when the analyzer has them). Two codes: ``wplus`` from the
  crop as is (stage 1 trains on codes "with background") and ``wplus_whitened`` with background and
  cloth painted white first (stage 2, methods.md 3.1). Faces whose quad is <= 160 px wide in the
  working image are skipped, as ProcessWildImage does. The photo itself (longest side <= ``photo_max``)
  and the face mask pasted back onto it are kept for stage 2.
* ``pstf`` (UnicomAI/PSTF-AttControl): recipe ``pstf`` (512/512, padding, insightface 106 points
  when present) for e4e, **no** whitening; the training image is the same quad rendered at ``size``
  px; the keypoints are the detector's 5 points mapped once into that crop (the official
  ``prepare.py`` subtracts its canvas offset twice and stores keypoints shifted by -512 px; that
  bug is not reproduced). The embedding is the recogniser's raw output (antelopev2: 512-d, not
  normalised), exactly as PSTF/InstantID use it.

Face masks (255 = face): ParseNet classes skin..lower lip when a ParseNet is given, else the
landmark hull; the method used is recorded per item.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..errors import LikenessError
from ..face.types import Face, FaceAnalyzer
from ..inversion.align import PSTF, WPLUS_ADAPTER, AlignedFace, AlignRecipe, align_face, e4e_input_tensor, landmark_kind
from ..inversion.whitening import hull_background_mask, whiten_background
from ..parsenet import BACKGROUND_CLASSES, ParseNet, background_mask, parse_face
from ..pstf.preprocess import identity_embedding, recipe_landmarks
from .dataset import (
    IMAGE_SUFFIXES,
    METHODS,
    DatasetInfo,
    ItemRecord,
    append_record,
    item_complete,
    item_id_for,
    read_manifest,
    write_dataset_info,
    write_item,
)

__all__ = ["Encoder", "PrepareSettings", "prepare_dataset", "list_photos", "FACE_CLASSES"]

logger = logging.getLogger(__name__)

#: ParseNet classes that make up the face mask: skin, nose, glasses, eyes, brows, ears, mouth, lips.
FACE_CLASSES: tuple[int, ...] = tuple(range(1, 13))
#: The W+ adapter's ProcessWildImage skips faces whose working quad is at most this wide (its min_size).
WPLUS_MIN_QUAD = 160.0


class Encoder(Protocol):
    """What preparation needs from e4e (an :class:`~..inversion.e4e_model.E4EInverter`)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,256,256]`` in [-1, 1] -> absolute W+ ``[B,18,512]``."""


@dataclass(frozen=True)
class PrepareSettings:
    """How photos are turned into items (stored in ``dataset.json``; a resumed run must use the same).

    Attributes:
        method: ``"wplus"`` or ``"pstf"``.
        size: PSTF training-image side in px (the aligned crop at the PSTF quad); W+ uses 512.
        photo_max: W+ only: longest side of the stored photo in px.
        multi_face: ``"skip"`` (record "N faces") or ``"largest"`` (keep the largest face).
        mask: ``"parsenet"`` or ``"landmark_hull"``.
        face_backend: the analyzer's name and recogniser, recorded for the trainers.
        e4e: where the e4e weights came from.
    """

    method: str
    size: int = 1024
    photo_max: int = 1024
    multi_face: str = "skip"
    mask: str = "landmark_hull"
    face_backend: str = ""
    e4e: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LikenessError(f"--method {self.method!r}: choose one of {list(METHODS)}.")
        if self.multi_face not in ("skip", "largest"):
            raise LikenessError(f"--multi-face {self.multi_face!r}: choose 'skip' or 'largest'.")
        if self.mask not in ("parsenet", "landmark_hull"):
            raise LikenessError(f"--mask {self.mask!r}: choose 'parsenet' or 'landmark_hull'.")
        if self.size < 64 or self.size % 8 or self.photo_max < 64:
            raise LikenessError(f"--size must be a multiple of 8 >= 64 and --photo-max >= 64; got {self.size}.")

    @property
    def recipe(self) -> AlignRecipe:
        return WPLUS_ADAPTER if self.method == "wplus" else PSTF


Progress = Callable[[int, int, ItemRecord], None]


def list_photos(photos: Path) -> list[Path]:
    """Image files under ``photos`` (recursive, sorted by relative path).

    Raises:
        LikenessError: not a folder, or no image in it.
    """
    photos = Path(photos)
    if not photos.is_dir():
        raise LikenessError(f"--photos {str(photos)!r} is not a folder of photos.")
    found = sorted(p for p in photos.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise LikenessError(f"{photos} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _caption(photo: Path) -> list[str]:
    side = photo.with_suffix(".txt")
    if not side.is_file():
        return []
    return [line.strip() for line in side.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    path = out / "dataset.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    diff = {k: (old.get(k), v) for k, v in asdict(settings).items() if old.get(k) != v}
    if diff:
        raise LikenessError(
            f"{out} was prepared with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}"
            "). Use the same options to resume, or another --out."
        )


def prepare_dataset(
    photos: str | Path,
    out: str | Path,
    settings: PrepareSettings,
    analyzer: FaceAnalyzer,
    encoder: Encoder,
    *,
    parsenet: ParseNet | None = None,
    retry_skipped: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DatasetInfo:
    """Prepare (or resume preparing) a training dataset.

    Args:
        photos: folder of photos (recursive); ``<photo>.txt`` beside a photo holds its captions.
        out: dataset folder (created; an existing one is resumed: unchanged photos already done,
            or already skipped unless ``retry_skipped``, are not processed again).
        settings: :class:`PrepareSettings`; must equal those of an existing ``out``.
        analyzer: face detector (PSTF: an insightface analyzer with a recogniser, antelopev2).
        encoder: e4e (:class:`~..inversion.e4e_model.E4EInverter`).
        parsenet: ParseNet for ``settings.mask == "parsenet"``.
        retry_skipped: process photos again that an earlier run skipped.
        limit: process at most this many photos in this run.
        progress: ``progress(done, total, record)`` after each photo.
        should_stop: checked between photos; True ends the run cleanly.

    Returns:
        The :class:`~.dataset.DatasetInfo` written to ``out/dataset.json`` (also after an interruption).

    Raises:
        LikenessError: bad folders or settings, a PSTF analyzer without embeddings, no ParseNet for
            ``mask="parsenet"``.
    """
    out, photos = Path(out), Path(photos)
    sources = list_photos(photos)
    if settings.mask == "parsenet" and parsenet is None:
        raise LikenessError("--mask parsenet needs the ParseNet weights (parse_multi_iter_90000.pth).")
    if settings.method == "pstf" and (analyzer.name != "insightface" or not analyzer.embedding_model):
        raise LikenessError(
            f"PSTF needs antelopev2's ArcFace identity embeddings (512-d) but the face analyzer is {analyzer!r}. Use "
            "the insightface backend with the antelopev2 pack (its recogniser is glintr100.onnx)."
        )
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    done = read_manifest(out)
    todo = [(photo, photo.relative_to(photos).as_posix()) for photo in sources]
    try:
        handled = 0
        for index, (photo, rel) in enumerate(todo):
            if should_stop is not None and should_stop():
                logger.info("prepare-dataset: stopped after %d photo(s); run again to resume", handled)
                break
            if limit is not None and handled >= limit:
                break
            record = _resume_record(out, done.get(rel), photo, settings.method, retry_skipped)
            if record is None:
                record = _process(photo, rel, out, settings, analyzer, encoder, parsenet)
                append_record(out, record)
                handled += 1
            if progress is not None:
                progress(index + 1, len(todo), record)
    finally:
        info = write_dataset_info(out, settings.method, asdict(settings))
    return info


def _resume_record(
    out: Path, old: ItemRecord | None, photo: Path, method: str, retry_skipped: bool
) -> ItemRecord | None:
    """The existing record when the photo need not be processed again, else None."""
    if old is None or old.sha256 != _sha256(photo):
        return None
    if old.status == "ok":
        return old if item_complete(out, old.id, method) else None
    return None if retry_skipped else old


def _skip(item_id: str, rel: str, sha: str, reason: str, faces: int = 0, caption: list[str] | None = None):
    logger.info("prepare-dataset: %s skipped: %s", rel, reason)
    return ItemRecord(item_id, rel, sha, "skipped", reason, faces, caption=caption or [])


def _process(
    photo: Path,
    rel: str,
    out: Path,
    settings: PrepareSettings,
    analyzer: FaceAnalyzer,
    encoder: Encoder,
    parsenet: ParseNet | None,
) -> ItemRecord:
    item_id, sha, caption = item_id_for(rel), _sha256(photo), _caption(photo)
    try:
        with Image.open(photo) as img:
            rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
    except OSError as exc:
        return _skip(item_id, rel, sha, f"unreadable image: {exc}", caption=caption)
    faces = analyzer.detect(rgb)
    if not faces:
        return _skip(item_id, rel, sha, "no face", 0, caption)
    if len(faces) > 1 and settings.multi_face == "skip":
        reason = f"{len(faces)} faces (use --multi-face largest to keep the largest)"
        return _skip(item_id, rel, sha, reason, len(faces), caption)
    face = max(faces, key=lambda f: f.area)
    landmarks, note = recipe_landmarks(face, settings.recipe.name)
    if note:
        logger.info("prepare-dataset: %s: %s", rel, note)
    kind = landmark_kind(landmarks)
    aligned = align_face(rgb, landmarks, settings.recipe)
    if settings.method == "wplus" and aligned.working_quad_width <= WPLUS_MIN_QUAD:
        return _skip(
            item_id, rel, sha, f"face too small: quad {aligned.working_quad_width:.0f} px <= 160", len(faces), caption
        )
    fmask, bg, mask_used = _masks(aligned, settings.mask, parsenet)
    x = e4e_input_tensor(aligned, settings.recipe)
    codes = [x] if settings.method == "pstf" else [x, whiten_background(x, bg)]
    wplus = encoder.encode(torch.cat(codes)).float().cpu()
    if settings.method == "wplus":
        images, tensors = _wplus_item(rgb, aligned, fmask, settings), {"wplus": wplus[0], "wplus_whitened": wplus[1]}
    else:
        images, tensors = _pstf_item(rgb, face, landmarks, fmask, settings, wplus[0])
    metadata = {"source": rel, "caption": json.dumps(caption, ensure_ascii=False), "landmarks": kind, "mask": mask_used}
    write_item(out, item_id, images, tensors, metadata)
    return ItemRecord(item_id, rel, sha, "ok", "", len(faces), kind, mask_used, caption)


def _masks(aligned: AlignedFace, method: str, parsenet: ParseNet | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(face mask, whitening background mask, method); float32 [S,S] on the aligned crop, 1 = in the region."""
    size = aligned.image.shape[0]
    if method == "parsenet":
        img = aligned.image
        if size != 512:
            img = np.asarray(Image.fromarray(img).resize((512, 512), Image.Resampling.BICUBIC))
        labels = parse_face(parsenet, img).cpu()
        face, bg = background_mask(labels, FACE_CLASSES), background_mask(labels, BACKGROUND_CLASSES)
        if size != 512:
            face = F.interpolate(face[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        return face, bg, "parsenet"
    face = 1.0 - hull_background_mask(aligned.landmarks, size, forehead_factor=1.0)
    return face, hull_background_mask(aligned.landmarks, size), "landmark_hull"


def _to_u8(mask: torch.Tensor) -> np.ndarray:
    return (mask.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def _wplus_item(
    rgb: np.ndarray, aligned: AlignedFace, fmask: torch.Tensor, settings: PrepareSettings
) -> dict[str, np.ndarray]:
    """aligned + mask, and the photo (longest side <= photo_max) with the face mask pasted back."""
    h, w = rgb.shape[:2]
    r = min(1.0, settings.photo_max / max(h, w))
    size = (max(1, round(w * r)), max(1, round(h * r)))
    photo = rgb if r == 1.0 else np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    sx, sy = size[0] / w, size[1] / h
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    m = torch.from_numpy((scale @ aligned.aligned_to_source)[:2]).float()[None]
    pasted = kornia.geometry.transform.warp_affine(fmask[None, None], m, (size[1], size[0]), align_corners=True)
    return {
        "aligned.png": aligned.image,
        "aligned_mask.png": _to_u8(fmask),
        "photo.png": photo,
        "photo_mask.png": _to_u8(pasted[0, 0]),
    }


def _pstf_item(
    rgb: np.ndarray,
    face: Face,
    landmarks: np.ndarray,
    fmask: torch.Tensor,
    settings: PrepareSettings,
    wplus: torch.Tensor,
) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """The training image (PSTF quad at ``size``), its mask, and W+, embedding, keypoints in its pixels."""
    big = align_face(rgb, landmarks, AlignRecipe("pstf_train", settings.size, settings.size, True))
    kps = np.asarray(face.kps, np.float64)
    mapped = (big.source_to_aligned @ np.concatenate([kps, np.ones((5, 1))], axis=1).T).T[:, :2]
    embedding, _ = identity_embedding(face)
    mask = F.interpolate(fmask[None, None], size=(settings.size,) * 2, mode="bilinear", align_corners=False)[0, 0]
    images = {"aligned.png": big.image, "aligned_mask.png": _to_u8(mask)}
    tensors = {
        "wplus": wplus,
        "embedding": torch.from_numpy(embedding),
        "kps": torch.from_numpy(mapped.astype(np.float32)),
    }
    return images, tensors
