"""``python -m models.cli prepare-dataset``: photos -> a training dataset for ``train-wplus`` / ``train-pstf``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ...models.errors import LikenessError

__all__ = ["add_prepare_parser", "ProgressBar"]

logger = logging.getLogger(__name__)


class ProgressBar:
    """A one-line progress bar on a terminal; one line per item otherwise (logs, CI)."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int, record) -> None:
        status = record.status if record.status == "ok" else f"skipped ({record.reason})"
        if not self.tty:
            self.stream.write(f"[{done}/{total}] {record.source}: {status}\n")
        else:
            filled = int(self.width * done / max(total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {done}/{total} {record.source[:40]}: {status[:40]}".ljust(120))
            if done == total:
                self.stream.write("\n")
        self.stream.flush()


def add_prepare_parser(sub: argparse._SubParsersAction, models_dir_help: str) -> None:
    p = sub.add_parser(
        "prepare-dataset",
        help="photos -> training dataset (aligned crops, masks, e4e W+, PSTF embeddings/keypoints); resumable",
    )
    p.add_argument("--photos", required=True, help="folder of face photos (recursive); <photo>.txt = its captions")
    p.add_argument("--out", required=True, help="dataset folder (an existing one is resumed)")
    p.add_argument("--method", required=True, choices=["wplus", "pstf"], help="which trainer the data is for")
    p.add_argument("--models-dir", help=models_dir_help)
    p.add_argument("--e4e", help="e4e_ffhq_encode.pt (default: <models-dir>/e4e/e4e_ffhq_encode.pt)")
    p.add_argument(
        "--face-backend",
        choices=["embedded", "insightface"],
        help="face detector: default embedded (dlib 68 points, as the W+ adapter) for wplus, insightface "
        "(antelopev2: embedding, 106 points; NON-COMMERCIAL weights) for pstf",
    )
    p.add_argument("--pack", default="antelopev2", help="insightface pack (default antelopev2)")
    p.add_argument(
        "--mask",
        default="auto",
        choices=["auto", "parsenet", "landmark_hull"],
        help="face masks: ParseNet (parse_multi_iter_90000.pth in face_parsing/) or the landmark hull; "
        "auto = ParseNet when found",
    )
    p.add_argument("--multi-face", default="skip", choices=["skip", "largest"], help="photos with several faces")
    p.add_argument("--size", type=int, default=1024, help="pstf: training-image side in px (default 1024)")
    p.add_argument("--photo-max", type=int, default=1024, help="wplus: longest side of the kept photo (1024)")
    p.add_argument("--device", default="cpu", help="torch device for e4e and ParseNet (cpu, cuda, cuda:1)")
    p.add_argument("--providers", default=None, help="insightface ONNX providers: cpu (default) or auto")
    p.add_argument("--limit", type=int, help="process at most N photos in this run")
    p.add_argument("--retry-skipped", action="store_true", help="process photos an earlier run skipped again")
    p.set_defaults(func=run_prepare)


def _analyzer(args: argparse.Namespace, search: dict[str, list[Path]]):
    from ...models.face.factory import create_analyzer

    backend = args.face_backend or ("embedded" if args.method == "wplus" else "insightface")
    return create_analyzer(backend, search["insightface"], args.providers, pack=args.pack)


def run_prepare(args: argparse.Namespace) -> int:
    import torch

    from ...models.files.registry import find_file
    from ...models.inversion.e4e_model import load_e4e
    from ...models.parsenet import PARSENET_FILE, load_parsenet
    from ...models.training.prepare import PrepareSettings, prepare_dataset
    from ..model_dirs import default_models_dir, search_paths

    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    search = search_paths(models_dir, None)
    analyzer = _analyzer(args, search)
    e4e_path = Path(args.e4e) if args.e4e else find_file("e4e", "e4e_ffhq_encode.pt", search)
    mask = args.mask
    if mask == "auto":
        mask = (
            "parsenet" if any((Path(p) / PARSENET_FILE).is_file() for p in search["face_parsing"]) else "landmark_hull"
        )
        logger.info("prepare-dataset: --mask auto -> %s", mask)
    parsenet = (
        load_parsenet(find_file("face_parsing", PARSENET_FILE, search), args.device) if mask == "parsenet" else None
    )
    settings = PrepareSettings(
        args.method, size=args.size, photo_max=args.photo_max, multi_face=args.multi_face, mask=mask,
        face_backend=f"{analyzer.name}:{analyzer.embedding_model or '-'}", e4e=e4e_path.name,
    )  # fmt: skip
    inverter = load_e4e(e4e_path).to(torch.device(args.device))
    try:
        info = prepare_dataset(args.photos, args.out, settings, analyzer, inverter, parsenet=parsenet,
                               retry_skipped=args.retry_skipped, limit=args.limit, progress=ProgressBar())  # fmt: skip
    except KeyboardInterrupt:
        sys.stdout.write(f"\ninterrupted; run the same command again to resume ({Path(args.out) / 'manifest.jsonl'})\n")
        return 130
    reasons = ", ".join(f"{k}: {v}" for k, v in info.counts["skipped_by_reason"].items()) or "none"
    sys.stdout.write(f"{args.out}: {info.counts['ok']} items ready, {info.counts['skipped']} skipped ({reasons})\n")
    if info.counts["ok"] == 0:
        raise LikenessError(f"No usable photo in {args.photos}; see {Path(args.out) / 'manifest.jsonl'}.")
    return 0
