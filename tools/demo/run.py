"""``python -m models.cli demo``: the main job on one photo, offline, on the CPU, without ComfyUI.

Pipeline (one log line per stage, INFO): load the photo -> find the models (writing
smoke models when the real ones are absent) -> detect faces (embedded backend) -> take
the largest -> FFHQ-align it (``recipe``) -> background whitening -> e4e encode to an
absolute W+ code -> save the identity -> sweep one attribute direction -> decode previews
through e4e's StyleGAN2 decoder -> write PNGs and a text report. Optionally, SD1.5 images
with the W+ adapter (:mod:`.sd15`).

Outputs in ``out_dir``:

* ``aligned.png``: the aligned face (``recipe.output_size`` px square, 512 for ``wplus_adapter``);
* ``e4e_input.png``: what the encoder saw (256 px, after whitening);
* ``reconstruction.png``: the decoded identity code (``preview_size`` px square);
* ``sweep_<attribute>.png``: one decoded image per strength side by side, each above a label
  band of :data:`LABEL_BAND` px; ``len(strengths) * preview_size`` x ``preview_size + LABEL_BAND``;
* ``identity.safetensors``: the W+ code [1, 18, 512] (:func:`models.inversion.codes.load_wplus` reads it);
* ``report.txt``: face box, recipe, whitening, the model files and whether they are smoke
  models, timings per stage;
* ``sd15_<i>.png``: only with ``sd15_diffusers``.

Smoke models (random weights in the official formats, :mod:`tools.smoke.writers`) make every stage run,
but every image they produce is noise; the report, the log and the sweep labels say so.
A smoke e4e file is recognised by its ``opts`` (exactly :func:`models.inversion.e4e_model.default_e4e_opts`,
the released file carries its training options), smoke directions by their values
(:func:`tools.smoke.writers.smoke_direction` for seeds 0..3 or the run's seed).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from ...models.errors import LikenessError, MissingModelError, NoFaceError
from ...models.files.doctor import cli_command

__all__ = [
    "DemoReport",
    "ModelUse",
    "run_demo",
    "load_demo_image",
    "sweep_strip",
    "is_smoke_e4e",
    "is_smoke_direction",
    "E4E_FILE",
    "DIRECTION_SET",
    "LABEL_BAND",
]

logger = logging.getLogger(__name__)

E4E_FILE = "e4e_ffhq_encode.pt"
WPLUS_FILE = "wplus_adapter.bin"
DIRECTION_SET = "encoder4editing/interfacegan"
LABEL_BAND = 40
SMOKE_BANNER = "SMOKE MODELS (random weights): every image of this demo is NOISE, not a face edit"
_SMOKE_SEEDS = (0, 1, 2, 3)


@dataclass(frozen=True)
class ModelUse:
    """One model file the demo used.

    Attributes:
        role: what it was used for (``"e4e"``, ``"directions"``, ...).
        path: the file or folder.
        smoke: True for a random-weight smoke model (its outputs are noise).
        note: e.g. ``"written by this run"``.
    """

    role: str
    path: str
    smoke: bool
    note: str = ""


@dataclass
class DemoReport:
    """What :func:`run_demo` did and wrote.

    Attributes:
        out_dir: the output folder.
        image_source: the photo's path, or ``"skimage.data.astronaut()"``.
        image_size: ``(width, height)`` of the photo in pixels.
        faces_found: faces the detector returned.
        face_box: ``(x1, y1, x2, y2)`` of the chosen (largest) face, source pixels.
        face_score: its detector score in [0, 1].
        landmark_kind: ``"lm68"`` (dlib 68 points) or ``"kps5"`` (5 keypoints) used for alignment.
        recipe: alignment recipe name.
        whitening: whitening method actually used (``"parsenet"``, ``"landmark_hull"``, ``"none"``).
        direction: ``"set:direction"`` key of the swept direction.
        strengths: the sweep strengths, in order.
        labels: one label per sweep image (``"age=+3.0"``).
        models: the model files used.
        timings: seconds per stage, in run order.
        files: ``{name: path}`` of everything written.
        notes: remarks worth reading (fallbacks taken, skipped stages).
    """

    out_dir: Path
    image_source: str = ""
    image_size: tuple[int, int] = (0, 0)
    faces_found: int = 0
    face_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    face_score: float = 0.0
    landmark_kind: str = ""
    recipe: str = ""
    whitening: str = ""
    direction: str = ""
    strengths: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    models: list[ModelUse] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def smoke(self) -> bool:
        """True when any model used is a smoke model (the images are noise)."""
        return any(m.smoke for m in self.models)

    @property
    def total_seconds(self) -> float:
        """Sum of the stage timings."""
        return float(sum(self.timings.values()))

    def to_text(self) -> str:
        """The full report (``report.txt``)."""
        lines = ["Likeness demo report", "===================="]
        if self.smoke:
            lines += ["", f"WARNING: {SMOKE_BANNER}.", f"Get the real files: {cli_command('doctor')}."]
        box = ", ".join(f"{v:.1f}" for v in self.face_box)
        lines += [
            "",
            f"image:      {self.image_source} ({self.image_size[0]}x{self.image_size[1]} px)",
            f"faces:      {self.faces_found} found; largest box (x1, y1, x2, y2) = ({box}), score "
            f"{self.face_score:.2f}",
            f"landmarks:  {self.landmark_kind}",
            f"recipe:     {self.recipe}",
            f"whitening:  {self.whitening}",
            f"direction:  {self.direction}",
            f"strengths:  {', '.join(f'{s:g}' for s in self.strengths)}",
            "",
            "model files:",
        ]
        for m in self.models:
            kind = "SMOKE (random weights)" if m.smoke else "real"
            lines.append(f"  {m.role:<12} {kind:<22} {m.path}" + (f"  [{m.note}]" if m.note else ""))
        lines += ["", "timings (s):"]
        lines += [f"  {name:<14} {sec:8.2f}" for name, sec in self.timings.items()]
        lines.append(f"  {'total':<14} {self.total_seconds:8.2f}")
        lines += ["", "files:"] + [f"  {name:<14} {path}" for name, path in self.files.items()]
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = []
        if self.smoke:
            lines.append(f"!!! {SMOKE_BANNER}. Run {cli_command('doctor')} to see how to get the real model files.")
        x1, y1, x2, y2 = self.face_box
        lines += [
            f"face: ({x1:.0f}, {y1:.0f})-({x2:.0f}, {y2:.0f}) of {self.faces_found} found in {self.image_source}",
            f"recipe {self.recipe}, whitening {self.whitening}, direction {self.direction} at "
            f"{', '.join(f'{s:g}' for s in self.strengths)}",
            f"wrote {len(self.files)} files to {self.out_dir} in {self.total_seconds:.1f} s",
        ]
        return "\n".join(lines)


@contextmanager
def _stage(report: DemoReport, name: str, what: str) -> Iterator[None]:
    logger.info("demo: %s ...", what)
    start = time.perf_counter()
    yield
    report.timings[name] = report.timings.get(name, 0.0) + time.perf_counter() - start
    logger.info("demo: %s done in %.2f s", name, report.timings[name])


def load_demo_image(image_path: str | Path | None) -> tuple[np.ndarray, str]:
    """The photo as uint8 ``[H, W, 3]`` RGB and a description of its source.

    ``None`` gives scikit-image's public-domain astronaut photo (Eileen Collins, NASA),
    which ships inside the scikit-image wheel (no download).

    Raises:
        LikenessError: no such file / not an image, or no path and scikit-image missing.
    """
    if image_path is None:
        if importlib.util.find_spec("skimage") is None:
            raise LikenessError(
                "No --image given and scikit-image is not installed, so the default astronaut photo is not "
                "available. Pass a photo with --image PATH, or: pip install scikit-image"
            )
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[..., :3]), "skimage.data.astronaut()"
    path = Path(image_path)
    if not path.is_file():
        raise LikenessError(f"--image {str(image_path)!r}: no such file. Give the path of a photo with a face.")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except OSError as exc:
        raise LikenessError(f"Cannot read {path} as an image ({exc}); give a JPEG/PNG/WebP photo.") from None
    return np.ascontiguousarray(rgb), str(path)


def is_smoke_e4e(opts: dict[str, Any]) -> bool:
    """True when an e4e checkpoint's ``opts`` are exactly those :mod:`tools.smoke.writers` writes."""
    from ...models.inversion.e4e_model import default_e4e_opts

    return dict(opts) == default_e4e_opts()


def is_smoke_direction(name: str, vector: torch.Tensor, seeds: Sequence[int] = _SMOKE_SEEDS) -> bool:
    """True when ``vector`` ([18, 512] or [1, 512]) is the smoke direction (``smoke_direction``) of one of ``seeds``."""
    from ..smoke.writers import smoke_direction

    row = vector.reshape(-1, vector.shape[-1])[0].float()
    return any(torch.allclose(row, smoke_direction(name, s).reshape(-1, 512)[0], atol=1e-6) for s in seeds)


def _font(size: int) -> Any:
    """Pillow's bundled font at ``size`` px; its fixed bitmap font when Pillow lacks FreeType."""
    return ImageFont.load_default(size=size) if features.check("freetype2") else ImageFont.load_default()


def sweep_strip(images: Sequence[np.ndarray], labels: Sequence[str], smoke: bool = False) -> Image.Image:
    """Images side by side, each above a :data:`LABEL_BAND` px band with its label.

    Args:
        images: uint8 ``[S, S, 3]`` each (same S).
        labels: one label per image.
        smoke: add "SMOKE: noise" in red under each label.

    Returns:
        RGB image ``(len(images) * S) x (S + LABEL_BAND)``.
    """
    if not images or len(images) != len(labels):
        raise ValueError(f"need one label per image; got {len(images)} images and {len(labels)} labels")
    side = images[0].shape[0]
    strip = Image.new("RGB", (side * len(images), side + LABEL_BAND), "white")
    draw = ImageDraw.Draw(strip)
    font = _font(14)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        if img.shape != (side, side, 3):
            raise ValueError(f"image {i} is {img.shape}; all must be [{side}, {side}, 3]")
        strip.paste(Image.fromarray(img), (i * side, LABEL_BAND))
        draw.text((i * side + side // 2, 11), label, fill="black", font=font, anchor="mm")
        if smoke:
            draw.text((i * side + side // 2, 29), "SMOKE: noise", fill=(200, 0, 0), font=font, anchor="mm")
    return strip


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, H, W] in about [-1, 1] -> B uint8 [H, W, 3]."""
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [np.ascontiguousarray(a.permute(1, 2, 0).numpy()) for a in arr]


def _prepare_e4e(report: DemoReport, search: dict[str, list[Path]], models_dir: Path, seed: int) -> Any:
    from ...models.files.registry import find_file
    from ...models.inversion.e4e_model import load_e4e
    from ..smoke.writers import write_smoke_models

    note = ""
    try:
        path = find_file("e4e", E4E_FILE, search)
    except MissingModelError:
        logger.warning(
            "demo: %s not found under %s; writing a SMOKE e4e model (random weights, ~1.2 GB). "
            "The demo will run end to end but every image it makes is NOISE.", E4E_FILE, models_dir / "e4e",
        )  # fmt: skip
        write_smoke_models(models_dir, seed=seed, parts=("e4e",))
        path, note = find_file("e4e", E4E_FILE, search), "written by this run"
    inverter = load_e4e(path)
    smoke = is_smoke_e4e(inverter.opts)
    if smoke:
        logger.warning("demo: %s is a SMOKE model (random weights): previews are noise", path)
    report.models.append(ModelUse("e4e", str(path), smoke, note))
    return inverter


def _prepare_direction(
    report: DemoReport, search: dict[str, list[Path]], models_dir: Path, attribute: str, seed: int
) -> Any:
    from ...models.directions import discover_directions
    from ..smoke.writers import write_smoke_models

    catalog = discover_directions(search)
    note = ""
    if ":" not in attribute and DIRECTION_SET not in catalog.sets:
        logger.warning(
            "demo: no e4e InterFaceGAN directions (set %r) under %s; writing SMOKE directions (random unit vectors): "
            "the sweep edits nothing meaningful.", DIRECTION_SET, models_dir / "likeness_directions",
        )  # fmt: skip
        write_smoke_models(models_dir, seed=seed, parts=("directions",))
        catalog, note = discover_directions(search), "written by this run"
    key = attribute if ":" in attribute else f"{DIRECTION_SET}:{attribute}"
    direction = catalog.get(key)
    smoke = is_smoke_direction(direction.name, direction.vector, (*_SMOKE_SEEDS, seed))
    if smoke:
        logger.warning(
            "demo: direction %s is a SMOKE direction (random): the sweep is not an %s edit", key, direction.name
        )
    files = catalog.sets[key.rpartition(":")[0]].files
    report.models.append(ModelUse("directions", ", ".join(str(f) for f in files) or direction.source, smoke, note))
    report.direction = key
    return direction


def run_demo(
    image_path: str | Path | None,
    models_dir: str | Path,
    out_dir: str | Path,
    attribute: str = "age",
    strengths: str | Sequence[float] = "-3:3:3",
    recipe: str = "wplus_adapter",
    whitening: str = "auto",
    seed: int = 0,
    *,
    preview_size: int = 256,
    fast_preview: bool = True,
    sd15_diffusers: str | Path | None = None,
    prompt: str | None = None,
    sd15_steps: int = 30,
) -> DemoReport:
    """Detect, align, invert, edit and preview one photo; write the results to ``out_dir``.

    Args:
        image_path: a photo, or None for scikit-image's astronaut.
        models_dir: ComfyUI-style models folder (``e4e/``, ``likeness_directions/``, ``face_parsing/``,
            ``wplus/``). Missing e4e / directions are written there as smoke models (logged as warnings).
        out_dir: output folder (created).
        attribute: a direction of the ``encoder4editing/interfacegan`` set (``age``, ``smile``, ``pose``)
            or any ``"set:direction"`` key of the models folder.
        strengths: sweep strengths, ``"-3:3:3"`` (start:stop:step, stop included) or ``"-2,0,2"``.
        recipe: alignment recipe (``wplus_adapter``, ``e4e_official``, ``pstf``).
        whitening: ``auto``, ``parsenet``, ``landmark_hull`` or ``none`` (see :func:`resolve_whitening`).
        seed: seed of smoke models written by this run and of the SD1.5 noise.
        preview_size: side of the decoded previews in pixels (<= 1024).
        fast_preview: stop the 1024 px StyleGAN2 decoder at the preview resolution (~3x faster on a
            CPU, slightly softer); False renders 1024 px and downscales.
        sd15_diffusers: a local diffusers SD1.5 folder: also make one SD1.5 image per sweep point.
        prompt: SD1.5 prompt (default :data:`.sd15.DEFAULT_PROMPT`).
        sd15_steps: SD1.5 sampler steps.

    Returns:
        A :class:`DemoReport` (also written as ``report.txt``).

    Raises:
        NoFaceError: no face in the photo.
        LikenessError: bad arguments, unreadable photo or model file.
    """
    from ...models.directions import parse_strengths, sweep
    from ...models.files.registry import folder_paths_under
    from ...models.inversion.align import RECIPES
    from ...models.inversion.pipeline import WHITENING_CHOICES

    if recipe not in RECIPES:
        raise LikenessError(f"Unknown alignment recipe {recipe!r}; choose one of {list(RECIPES)}.")
    if whitening not in WHITENING_CHOICES:
        raise LikenessError(f"Unknown whitening {whitening!r}; choose one of {list(WHITENING_CHOICES)}.")
    values = parse_strengths(strengths)
    if sd15_diffusers is not None:
        from .sd15 import check_sd15_diffusers_dir, require_sd15_packages

        check_sd15_diffusers_dir(sd15_diffusers)
        require_sd15_packages()
    models_dir, out = Path(models_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out_dir=out, recipe=recipe, strengths=values)
    search = folder_paths_under(models_dir)

    with _stage(report, "image", "loading the photo"):
        rgb, report.image_source = load_demo_image(image_path)
        report.image_size = (int(rgb.shape[1]), int(rgb.shape[0]))
    with _stage(report, "models", f"finding models under {models_dir}"):
        inverter = _prepare_e4e(report, search, models_dir, seed)
        direction = _prepare_direction(report, search, models_dir, attribute, seed)
    with _stage(report, "detect", "detecting faces (embedded backend)"):
        face = _largest_face(report, rgb)
    inversion = _invert(report, inverter, rgb, face, whitening, search)
    wplus = inversion.wplus
    with _stage(report, "sweep", f"sweeping {report.direction} over {values}"):
        swept = sweep(wplus, direction, values)
        report.labels = list(swept.labels)
    with _stage(report, "decode", f"decoding {1 + len(values)} previews at {preview_size} px"):
        previews = _to_uint8(inverter.decode(torch.cat([wplus, swept.wplus]), size=preview_size, fast=fast_preview))
    _write_pngs(report, inversion, previews, direction.name)
    if sd15_diffusers is None:
        logger.info("demo: SD1.5 images skipped (give --sd15-diffusers DIR, a local diffusers SD1.5 folder)")
        report.notes.append("SD1.5 images skipped: no --sd15-diffusers folder given")
    else:
        _run_sd15(report, search, models_dir, sd15_diffusers, swept.wplus, prompt, sd15_steps, seed)
    report.files["report"] = out / "report.txt"
    report.files["report"].write_text(report.to_text(), encoding="utf-8")
    logger.info("demo: report written to %s", report.files["report"])
    return report


def _write_pngs(report: DemoReport, inversion: Any, previews: list[np.ndarray], direction_name: str) -> None:
    out = report.out_dir
    with _stage(report, "write", "writing PNGs"):
        files = {
            "aligned": (out / "aligned.png", Image.fromarray(inversion.aligned.image)),
            "e4e_input": (out / "e4e_input.png", Image.fromarray(inversion.e4e_input_uint8().numpy())),
            "reconstruction": (out / "reconstruction.png", Image.fromarray(previews[0])),
            "sweep": (out / f"sweep_{direction_name}.png", sweep_strip(previews[1:], report.labels, report.smoke)),
        }
        for name, (path, img) in files.items():
            img.save(path)
            report.files[name] = path


def _largest_face(report: DemoReport, rgb: np.ndarray) -> Any:
    from ...models.face import create_analyzer, select_faces

    faces = create_analyzer("embedded", embeddings=False).detect(rgb)
    chosen = select_faces(faces, "largest")
    report.faces_found = len(faces)
    if not chosen:
        raise NoFaceError(
            f"No face found in {report.image_source} ({rgb.shape[1]}x{rgb.shape[0]} px). Use a photo where a "
            "face is visible and at least about 64 px wide."
        )
    face = chosen[0]
    report.face_box = tuple(float(v) for v in face.bbox)  # type: ignore[assignment]
    report.face_score = face.score
    report.models.append(ModelUse("face", "embedded (yuface + dlib, from PyPI wheels)", False))
    report.landmark_kind = "lm68" if face.landmarks68 is not None else "kps5"
    if face.landmarks68 is None:
        report.notes.append("dlib is not installed: aligned from 5 keypoints instead of the official 68 landmarks")
    return face


def _invert(
    report: DemoReport, inverter: Any, rgb: np.ndarray, face: Any, whitening: str, search: dict[str, list[Path]]
) -> Any:
    """Align, whiten and encode the face with the shared pipeline; save the identity."""
    from ...models.inversion.codes import WPlusCodes, save_wplus
    from ...models.inversion.pipeline import invert_face, resolve_whitening

    with _stage(report, "whitening", f"background whitening ({whitening})"):
        plan = resolve_whitening(whitening, report.recipe, search)
        report.whitening = plan.method
        report.notes.append(f"whitening {plan.method}: {plan.reason}")
        if plan.parsenet_path is not None:
            report.models.append(ModelUse("face_parsing", str(plan.parsenet_path), False))
    with _stage(report, "encode", f"aligning ({report.recipe}) and encoding the face to W+"):
        landmarks = face.landmarks68 if face.landmarks68 is not None else face.kps
        inversion = invert_face(inverter, rgb, landmarks, report.recipe, plan)
    with _stage(report, "save", "saving the identity W+"):
        meta = {"source": report.image_source, "recipe": report.recipe, "whitening": report.whitening,
                "e4e": report.models[0].path, "smoke": report.models[0].smoke}  # fmt: skip
        codes = WPlusCodes(inversion.wplus, ("identity",), meta)
        report.files["identity"] = save_wplus(report.out_dir / "identity.safetensors", codes)
    return inversion


def _run_sd15(
    report: DemoReport, search: dict[str, list[Path]], models_dir: Path, sd15_dir: str | Path,
    codes: torch.Tensor, prompt: str | None, steps: int, seed: int,
) -> None:  # fmt: skip
    from ...models.files.registry import find_file
    from ..smoke.writers import write_smoke_models
    from .sd15 import DEFAULT_PROMPT, generate_sd15

    with _stage(report, "sd15", f"SD1.5 + W+ adapter, {len(report.labels)} images"):
        note = "smoke status not checked"
        try:
            adapter = find_file("wplus", WPLUS_FILE, search)
        except MissingModelError:
            logger.warning(
                "demo: %s not found; writing a SMOKE W+ adapter (random weights): SD1.5 images ignore the face",
                WPLUS_FILE,
            )
            write_smoke_models(models_dir, seed=seed, parts=("wplus",))
            adapter, note = find_file("wplus", WPLUS_FILE, search), "written by this run (SMOKE)"
        report.models.append(ModelUse("wplus", str(adapter), note.endswith("(SMOKE)"), note))
        report.models.append(ModelUse("sd15", str(sd15_dir), False))
        paths = generate_sd15(
            sd15_dir,
            adapter,
            codes,
            report.labels,
            report.out_dir,
            prompt=prompt or DEFAULT_PROMPT,
            steps=steps,
            seed=seed,
        )
        for i, path in enumerate(paths):
            report.files[f"sd15_{i}"] = path
