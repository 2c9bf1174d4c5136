"""``python -m models.cli train-wplus`` and ``train-pstf``: argument parsing, smoke set-up, the run summary.

The same command runs on one device (``python -m models.cli train-wplus ...``) and on several GPUs
(``accelerate launch --multi_gpu --num_processes N -m models.cli train-wplus ...``); accelerate's
environment decides.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ...models.errors import LikenessError

__all__ = ["add_train_parsers", "common_config"]

logger = logging.getLogger(__name__)

#: --smoke defaults: a run that finishes in well under a minute on one CPU core.
SMOKE_DEFAULTS = {"steps": 30, "resolution": 64, "batch_size": 4, "lr": 3e-3, "validation_steps": 3}


def _common(p: argparse.ArgumentParser, lr: float, resolution: int, batch: int) -> None:
    p.add_argument("--data", help="dataset folder from prepare-dataset (not needed with --smoke)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, train_log.jsonl, validation images")
    p.add_argument("--base", help="base model: a diffusers folder or a single .safetensors/.ckpt checkpoint")
    p.add_argument("--tokenizer", help="single-file --base: folder with CLIP vocab.json + merges.txt "
                   "(default: ComfyUI's comfy/sd1_tokenizer)")  # fmt: skip
    p.add_argument("--steps", type=int, help="optimizer steps to reach (a resumed run continues up to it)")
    p.add_argument("--resolution", type=int, help=f"training image side in px (default {resolution})")
    p.add_argument("--batch-size", type=int, help=f"samples per GPU per micro-step (default {batch})")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step (default 1)")
    p.add_argument("--lr", type=float, help=f"learning rate (default {lr:g}, the paper's)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps (default 0)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="default no")
    p.add_argument(
        "--save-every",
        type=int,
        help="checkpoint interval in steps (default W+ 2000, PSTF 5000 as the paper; --smoke: --steps)",
    )
    p.add_argument("--keep-checkpoints", type=int, help="keep only the newest N checkpoints")
    p.add_argument(
        "--validate-every",
        type=int,
        help="validation-image interval in steps (default: --save-every when --validation-face is given)",
    )
    p.add_argument("--validation-face", help="item id of the dataset (see manifest.jsonl) to render while training")
    p.add_argument("--validation-data", help="dataset holding --validation-face (default --data)")
    p.add_argument("--validation-prompt", help="prompt of the validation images")
    p.add_argument("--validation-steps", type=int, help="DDIM steps of the validation images (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, dropout and noise (default 0)")
    p.add_argument("--resume", default="auto", help="auto (newest checkpoint in --out), none, or a checkpoint folder")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--smoke", action="store_true", help="tiny random models + synthetic data: checks the pipeline "
                   "end to end on a CPU in seconds (the weights it writes are useless)")  # fmt: skip


def common_config(args: argparse.Namespace, defaults: dict[str, Any]) -> Any:
    """The :class:`TrainConfig` of the parsed arguments (``--smoke`` changes the defaults)."""
    from ...models.training.loop import TrainConfig

    d = {**defaults, **(SMOKE_DEFAULTS if args.smoke else {})}
    steps = args.steps or d["steps"]
    save_every = args.save_every or (steps if args.smoke else d["save_every"])
    # validation images: at every checkpoint when a validation face is given (or in a smoke run), unless set
    validate_every = args.validate_every or (save_every if args.smoke or args.validation_face else None)
    return TrainConfig(
        out=Path(args.out), steps=steps, batch_size=args.batch_size or d["batch_size"], grad_accum=args.grad_accum,
        lr=args.lr or d["lr"], weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        grad_clip=d.get("grad_clip"), mixed_precision=args.mixed_precision, save_every=save_every,
        keep_checkpoints=args.keep_checkpoints, validate_every=validate_every, seed=args.seed, resume=args.resume,
        num_workers=args.num_workers, cpu=args.cpu or args.smoke,
    )  # fmt: skip


def _data(args: argparse.Namespace, method: str) -> Path:
    from ...models.training.smoke import write_smoke_dataset

    if args.smoke:
        return write_smoke_dataset(Path(args.out) / "smoke_data", method, seed=args.seed)
    if not args.data:
        raise LikenessError("Give the dataset with --data (a folder made by prepare-dataset), or use --smoke.")
    return Path(args.data)


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("train-wplus", help="train the W+ adapter (SD1.5), stage 1 or 2; accelerate-ready")
    _common(w, 1e-4, 512, 8)
    w.add_argument("--stage", type=int, default=1, choices=[1, 2], help="1: face images; 2: in-the-wild + "
                   "disentanglement losses (needs --stage1)")  # fmt: skip
    w.add_argument("--stage1", help="stage 2: the stage-1 wplus_adapter.bin")
    w.add_argument("--direction-bank", help="stage 2: att_direction_scale.pth (w-plus-adapter; NON-COMMERCIAL)")
    w.add_argument("--ganspace-pca", help="stage 2: ffhq_pca.pt (encoder4editing)")
    w.add_argument("--ganspace-configs", help="stage 2: ganspace_configs.csv (w-plus-adapter; NON-COMMERCIAL)")
    w.add_argument("--lambda-disen", type=float, default=2.0, help="stage 2 L_disen weight (default 2.0)")
    w.add_argument("--lambda-preserve", type=float, default=1.0, help="stage 2 L_preserve weight (default 1.0)")
    w.add_argument("--fullbody", action="store_true", help="stage 2: full-body photos (SHHQ-like augmentation)")
    w.set_defaults(func=run_train_wplus)

    p = sub.add_parser("train-pstf", help="train PSTF-AttControl's W+ stream (SDXL + InstantID); accelerate-ready")
    _common(p, 1e-5, 1024, 2)
    p.add_argument("--instantid", help="InstantID ip-adapter.bin (identity Resampler + to_k_ip/to_v_ip)")
    p.add_argument("--controlnet", help="InstantID IdentityNet: its diffusers ControlNetModel folder")
    p.add_argument("--deltas", help="PreciseControl all_delta_w_dict.json: the W+ augmentation's directions")
    p.add_argument("--e4e", help="e4e_ffhq_encode.pt: its StyleGAN2 decoder renders the augmented targets")
    p.add_argument("--no-wplus-augmentation", action="store_true", help="train without the W+ augmentation")
    p.add_argument("--edit-prob", type=float, default=0.3, help="W+ augmentation probability (default 0.3)")
    p.add_argument(
        "--kps-pack",
        default="buffalo_l",
        help="insightface pack re-detecting the keypoints of the "
        "augmented targets (default buffalo_l, det 320, as PSTF); 'none' keeps the photo's keypoints",
    )
    p.add_argument("--models-dir", help="models directory holding insightface/ (default: $COMFYUI_PATH/models)")
    p.add_argument("--noise-offset", type=float, help="offset-noise strength (off by default, as the paper)")
    p.set_defaults(func=run_train_pstf)


def _write_config(args: argparse.Namespace, cfg: Any, acc: Any) -> None:
    from ...models.training.loop import config_summary

    if not acc.is_main_process:
        return
    data = {"command": sys.argv[1:], "args": {k: v for k, v in vars(args).items() if k != "func"},
            "config": config_summary(cfg)}  # fmt: skip
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "config.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


class StepPrinter:
    """Training progress on the console: a one-line status on a terminal, every ``every`` steps otherwise."""

    def __init__(self, total: int, every: int = 50, stream=None) -> None:
        self.total, self.every = total, every
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, record: dict[str, Any]) -> None:
        parts = " ".join(f"{k} {v:.4f}" for k, v in record["parts"].items())
        lr = ", ".join(f"{v:.2e}" for v in record["lr"].values())
        line = f"step {record['step']}/{self.total} loss {record['loss']:.4f} ({parts}) lr {lr} {record['time_s']:.0f}s"
        if self.tty:
            self.stream.write("\r" + line.ljust(110) + ("\n" if record["step"] >= self.total else ""))
        elif record["step"] % self.every == 0 or record["step"] >= self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


def _finish(result: Any, cfg: Any) -> int:
    if result.weights is None:  # not the main process
        return 0
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    sys.stdout.write(
        f"trained steps {result.start_step} -> {result.step}{last}; weights: {result.weights}; "
        f"log: {cfg.out / 'train_log.jsonl'}\n"
    )
    return 0


def run_train_wplus(args: argparse.Namespace) -> int:
    from ...models.training.loop import make_accelerator, run_training
    from ...models.training.smoke import smoke_base, write_smoke_wplus_bank
    from ...models.training.wplus import WPlusOptions, WPlusTrainer

    cfg = common_config(args, {"steps": 100000, "resolution": 512, "batch_size": 8, "lr": 1e-4, "save_every": 2000})
    acc = make_accelerator(cfg)
    bank = (args.direction_bank, args.ganspace_pca, args.ganspace_configs)
    with acc.main_process_first():  # smoke files are written once, by the main process
        data = _data(args, "wplus")
        if args.smoke and args.stage == 2 and not any(bank):
            bank = write_smoke_wplus_bank(Path(args.out) / "smoke_data" / "directions", args.seed)
    opts = WPlusOptions(
        stage=args.stage, data=data, base=args.base, resolution=args.resolution or (64 if args.smoke else 512),
        stage1=Path(args.stage1) if args.stage1 else None, lambda_disen=args.lambda_disen,
        lambda_preserve=args.lambda_preserve, direction_bank=_path(bank[0]), ganspace_pca=_path(bank[1]),
        ganspace_configs=_path(bank[2]), fullbody=args.fullbody, tokenizer=_path(args.tokenizer),
        validation_face=args.validation_face or ("smoke_000.png" if args.smoke else None),
        validation_data=_path(args.validation_data), validation_prompt=args.validation_prompt,
        validation_steps=args.validation_steps or (3 if args.smoke else 30), smoke_sites=args.smoke,
    )  # fmt: skip
    base = smoke_base("sd15", args.seed) if args.smoke else None
    _write_config(args, cfg, acc)
    return _finish(run_training(WPlusTrainer(opts, base), cfg, acc, StepPrinter(cfg.steps)), cfg)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value else None


def _pstf_augmentation(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(deltas path, decoder, keypoint analyzer) of a real run."""
    from ...models.face.factory import create_analyzer
    from ...models.training.pstf_data import StyleGANDecoder
    from ..model_dirs import default_models_dir, search_paths

    if args.no_wplus_augmentation:
        return None, None, None
    if not args.deltas or not args.e4e:
        raise LikenessError(
            "The PSTF W+ augmentation needs --deltas (PreciseControl all_delta_w_dict.json) and --e4e "
            "(e4e_ffhq_encode.pt, for its StyleGAN2 decoder); or pass --no-wplus-augmentation."
        )
    analyzer = None
    if args.kps_pack != "none":
        search = search_paths(Path(args.models_dir) if args.models_dir else default_models_dir(), None)
        analyzer = create_analyzer("insightface", search["insightface"], pack=args.kps_pack, det_size=320)
    return Path(args.deltas), StyleGANDecoder(args.e4e, args.resolution or 1024), analyzer


def run_train_pstf(args: argparse.Namespace) -> int:
    from ...models.training.loop import make_accelerator, run_training
    from ...models.training.pstf import PSTFOptions, PSTFTrainer, pstf_sites_of
    from ...models.training.pstf_data import smoke_decode_fn
    from ...models.training.smoke import SMOKE_RESAMPLER, smoke_base, smoke_controlnet, write_smoke_pstf_files

    cfg = common_config(
        args, {"steps": 230000, "resolution": 1024, "batch_size": 2, "lr": 1e-5, "grad_clip": 1.0, "save_every": 5000}
    )
    acc = make_accelerator(cfg)
    with acc.main_process_first():  # smoke files are written once, by the main process
        data = _data(args, "pstf")
    base = controlnet = None
    extra: dict[str, Any] = {}
    if args.smoke:
        base = smoke_base("sdxl", args.seed)
        controlnet = smoke_controlnet(base.unet, args.seed)
        with acc.main_process_first():
            files = write_smoke_pstf_files(Path(args.out) / "smoke_data" / "files", pstf_sites_of(base.unet, True))
        extra = dict(instantid=files[0], deltas=files[1], decoder=smoke_decode_fn(args.seed), resampler=SMOKE_RESAMPLER,
                     smoke_sites=True)  # fmt: skip
    else:
        deltas, decoder, analyzer = _pstf_augmentation(args)
        extra = dict(instantid=_path(args.instantid), deltas=deltas, decoder=decoder, kps_analyzer=analyzer)
    opts = PSTFOptions(
        data=data, base=args.base, controlnet=_path(args.controlnet), resolution=args.resolution or (64 if args.smoke
        else 1024), edit_prob=args.edit_prob, tokenizer=_path(args.tokenizer), noise_offset=args.noise_offset,
        validation_face=args.validation_face or ("smoke_000.png" if args.smoke else None),
        validation_data=_path(args.validation_data), validation_prompt=args.validation_prompt or "a person",
        validation_steps=args.validation_steps or (3 if args.smoke else 30), **extra,
    )  # fmt: skip
    _write_config(args, cfg, acc)
    return _finish(run_training(PSTFTrainer(opts, base, controlnet), cfg, acc, StepPrinter(cfg.steps)), cfg)
