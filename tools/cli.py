"""Command-line interface: ``python -m models.cli <command>``, run from the pack folder.

Works without ComfyUI. Commands:

* ``doctor``: which model files were found where, and how to get the missing ones.
* ``smoke-models``: write random-weight files in the official formats.
* ``queue``: run a sweep of an API workflow on ComfyUI servers (batch queue, resumable).
* ``demo``: detect, align, invert, edit and preview one photo (smoke models when real ones are absent).
* ``workflows``: rewrite the shipped UI workflows and the schema snapshot from a live ComfyUI (developers).
* ``screenshots``: README screenshots and template thumbnails from the real frontend (developers).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..models.errors import LikenessError

__all__ = ["main", "default_models_dir"]

logger = logging.getLogger("likeness")


def default_models_dir() -> Path:
    """``$COMFYUI_PATH/models`` when set, else ``./models_store``."""
    comfy = os.environ.get("COMFYUI_PATH")
    return Path(comfy) / "models" if comfy else Path("models_store")


def _search_paths(models_dir: Path, comfyui: Path | None) -> dict[str, list[Path]]:
    from ..models.files.registry import folder_paths_under

    paths = folder_paths_under(models_dir)
    if comfyui is not None:
        from ..models.files.extra_paths import read_extra_model_paths

        for key, extra in read_extra_model_paths(comfyui).items():
            if key in paths:
                paths[key] = paths[key] + [p for p in extra if p not in paths[key]]
    return paths


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ..models.files.doctor import format_report

    comfyui = Path(args.comfyui) if args.comfyui else None
    models_dir = Path(args.models_dir) if args.models_dir else (comfyui / "models" if comfyui else default_models_dir())
    sys.stdout.write(format_report(_search_paths(models_dir, comfyui)) + "\n")
    return 0


def _cmd_smoke(args: argparse.Namespace) -> int:
    from .smoke.writers import write_smoke_models

    written = write_smoke_models(Path(args.models_dir), reduced_unet=args.reduced_unet, overwrite=args.overwrite)
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    sys.stdout.write(
        "These are SMOKE models: random weights in the official file formats. Every Likeness "
        "workflow runs on them end to end, and every image they produce is noise.\n"
    )
    return 0


def _cmd_queue(args: argparse.Namespace) -> int:
    from .batch.runner import BatchProgress, format_progress, run_batch

    tty = sys.stdout.isatty()

    def show(p: BatchProgress) -> None:
        line = format_progress(p)
        if tty:
            sys.stdout.write("\r" + line[:160].ljust(160) + ("\n" if p.event == "finish" else ""))
        elif p.event in ("start", "done", "failed", "server_down", "server_up"):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        report = run_batch(
            args.workflow,
            args.spec,
            args.server,
            args.out,
            retries=args.retries,
            max_queue_per_server=args.max_queue,
            progress=show,
            poll_interval=args.poll,
            server_timeout=args.server_timeout,
            point_timeout=args.point_timeout,
            use_websocket=False if args.no_websocket else None,
            retry_failed=args.retry_failed,
        )
    except KeyboardInterrupt:
        sys.stdout.write(
            f"\ninterrupted; prompts already queued keep running on the server(s). Run the same "
            f"command again to resume (state in {Path(args.out) / 'manifest.json'}).\n"
        )
        return 130
    sys.stdout.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    report = run_demo(
        args.image, Path(args.models_dir) if args.models_dir else default_models_dir(), args.out,
        attribute=args.attribute, strengths=args.strengths, recipe=args.recipe, whitening=args.whitening,
        seed=args.seed, preview_size=args.preview_size, fast_preview=not args.full_previews,
        sd15_diffusers=args.sd15_diffusers, prompt=args.prompt, sd15_steps=args.steps,
    )  # fmt: skip
    sys.stdout.write(report.summary() + "\n")
    sys.stdout.write(f"report: {report.files['report']}\n")
    return 0


def _cmd_workflows(args: argparse.Namespace) -> int:
    from .workflows.convert import regenerate

    return regenerate(args.server, Path(args.root))


def _cmd_screenshots(args: argparse.Namespace) -> int:
    from .workflows.screenshots import take_screenshots

    return take_screenshots(args.server, Path(args.root), run=not args.no_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.cli", description="Likeness face-identity tools (no ComfyUI needed)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="report which model files were found and how to get missing ones")
    doctor.add_argument("--models-dir", help="models directory (default: $COMFYUI_PATH/models or ./models_store)")
    doctor.add_argument("--comfyui", help="a ComfyUI folder: use its models/ and extra_model_paths.yaml")
    doctor.set_defaults(func=_cmd_doctor)

    smoke = sub.add_parser("smoke-models", help="write random-weight model files in the official formats")
    smoke.add_argument("--models-dir", required=True, help="models directory to write into (ComfyUI layout)")
    smoke.add_argument(
        "--reduced-unet",
        action="store_true",
        help="a 0.6 GB reduced UNet instead of full SD1.5 (the W+ adapter cannot patch it)",
    )
    smoke.add_argument("--overwrite", action="store_true", help="replace existing files")
    smoke.set_defaults(func=_cmd_smoke)

    queue = sub.add_parser("queue", help="run a sweep of an API workflow on ComfyUI servers (resumable)")
    queue.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Workflow > Export (API))")
    queue.add_argument("--spec", required=True, help="sweep spec JSON (faces, sweep, seeds, overrides)")
    queue.add_argument("--server", action="append", required=True, help="ComfyUI URL; repeat for several servers")
    queue.add_argument("--out", required=True, help="output folder: images, manifest.json, report.csv/json")
    queue.add_argument("--retries", type=int, default=3, help="resubmissions of a prompt a server lost (default 3)")
    queue.add_argument("--max-queue", type=int, default=2, help="our prompts per server, running + waiting (default 2)")
    queue.add_argument("--poll", type=float, default=0.5, help="seconds between history polls (default 0.5)")
    queue.add_argument("--server-timeout", type=float, default=120.0, help="seconds a server may stay unreachable")
    queue.add_argument("--point-timeout", type=float, default=3600.0, help="seconds one prompt may take")
    queue.add_argument("--no-websocket", action="store_true", help="poll only; do not follow /ws")
    queue.add_argument("--retry-failed", action="store_true", help="on resume, run failed points again")
    queue.set_defaults(func=_cmd_queue)

    demo = sub.add_parser("demo", help="detect, align, invert, edit and preview one photo (offline, CPU)")
    demo.add_argument("--image", help="photo with a face (default: scikit-image's astronaut)")
    demo.add_argument(
        "--models-dir",
        help="models directory (default: $COMFYUI_PATH/models or ./models_store); "
        "missing e4e/directions are written there as SMOKE models (noise)",
    )
    demo.add_argument("--out", default="output/demo", help="output folder (default output/demo)")
    demo.add_argument("--attribute", default="age", help="age, smile, pose, or a 'set:direction' key (default age)")
    demo.add_argument(
        "--strengths", default="-3:3:3", help="sweep strengths, start:stop:step or a list (default -3:3:3)"
    )
    demo.add_argument("--recipe", default="wplus_adapter", help="alignment recipe: wplus_adapter, e4e_official, pstf")
    demo.add_argument("--whitening", default="auto", help="auto, parsenet, landmark_hull or none (default auto)")
    demo.add_argument("--seed", type=int, default=0, help="seed of smoke models written and of SD1.5 noise")
    demo.add_argument("--preview-size", type=int, default=256, help="side of the decoded previews in px (default 256)")
    demo.add_argument("--full-previews", action="store_true", help="render 1024 px and downscale (slower, sharper)")
    demo.add_argument(
        "--sd15-diffusers", help="local diffusers SD1.5 folder: also make SD1.5 images with the W+ adapter"
    )
    demo.add_argument("--prompt", help="SD1.5 prompt (with --sd15-diffusers)")
    demo.add_argument("--steps", type=int, default=30, help="SD1.5 steps (with --sd15-diffusers, default 30)")
    demo.set_defaults(func=_cmd_demo)

    workflows = sub.add_parser(
        "workflows",
        help="rewrite example_workflows/*.json and the schema snapshot from example_workflows/api/*.json (developers)",
    )
    workflows.add_argument(
        "--server", required=True, help="a running ComfyUI with this pack, e.g. http://127.0.0.1:8188"
    )
    workflows.add_argument("--root", default=".", help="repository root (default: current directory)")
    workflows.set_defaults(func=_cmd_workflows)

    shots = sub.add_parser(
        "screenshots",
        help="README screenshots and template thumbnails from the real frontend in headless Chromium (developers)",
    )
    shots.add_argument("--server", required=True, help="a running ComfyUI with this pack and the models")
    shots.add_argument("--root", default=".", help="repository root (default: current directory)")
    shots.add_argument("--no-run", action="store_true", help="do not run the workflows (no results on the nodes)")
    shots.set_defaults(func=_cmd_screenshots)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except LikenessError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
