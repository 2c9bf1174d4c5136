"""A W+ adapter trained on the smoke SD1.5 single file loads in Likeness Load W+ Adapter and runs the portrait workflow.

The training runs the real path of ``train-wplus`` (the single-file SD1.5 checkpoint through diffusers +
transformers, the official initialisation, a checkpoint in the official layout) for 2 steps at 64 px and resumes
to step 3; the file then drives ComfyUI's SD1.5 UNet through the shipped portrait workflow on a real server.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
TRAINED_NAME = "likeness_trained_smoke.bin"


def _cli(argv: list[str]) -> int:
    from likeness.tools.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_models_dir, comfy_env):
    from likeness.models.training.smoke import write_smoke_dataset
    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    tmp = tmp_path_factory.mktemp("train")
    data = write_smoke_dataset(tmp / "data", "wplus", n=3, size=64)
    argv = [
        "train-wplus",
        "--base",
        str(smoke_models_dir / "checkpoints" / SMOKE_CHECKPOINT),
        "--tokenizer",
        str(comfy_env.path / "comfy" / "sd1_tokenizer"),
        "--data",
        str(data),
        "--out",
        str(tmp / "run"),
        "--resolution",
        "64",
        "--batch-size",
        "1",
        "--save-every",
        "1",
        "--cpu",
    ]
    assert _cli([*argv, "--steps", "2"]) == 0
    first = (tmp / "run" / "train_log.jsonl").read_text().splitlines()
    assert _cli([*argv, "--steps", "3"]) == 0  # resumes from checkpoint-000002
    return tmp / "run", first, smoke_models_dir / "checkpoints" / SMOKE_CHECKPOINT


def test_training_resumes_from_the_saved_step(trained):
    run, first, _ = trained
    lines = (run / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert lines[:2] == first, "the resumed run kept the log of steps 1-2 and appended step 3"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-00000{i}" for i in (1, 2, 3)]
    state = torch.load(run / "checkpoint-000003" / "training_state.pt", weights_only=True)
    assert state["step"] == 3 and state["fingerprint"]["resolution"] == 64


def test_trained_file_is_official_sd15_layout_initialised_from_the_unet(trained):
    from safetensors import safe_open

    from likeness.models.wplus_adapter.model import load_wplus_adapter

    run, _, checkpoint = trained
    adapter = load_wplus_adapter(run / "wplus_adapter.bin")  # the default SD1.5 table: full widths, 16 sites
    assert len(adapter.sites) == 16
    with safe_open(str(checkpoint), framework="pt") as fh:  # site 1 = input_blocks.1.1, site 31 = middle_block.1
        for site, prefix in ((1, "input_blocks.1.1"), (31, "middle_block.1")):
            base = f"model.diffusion_model.{prefix}.transformer_blocks.0.attn2."
            for mine, theirs in (("to_q_wplus", "to_q"), ("to_k_wplus", "to_k"), ("to_v_wplus", "to_v")):
                trained_w = getattr(adapter.layer(site), mine).weight.float()
                unet_w = fh.get_tensor(base + theirs + ".weight").float()
                diff = (trained_w - unet_w).abs().max().item()
                assert 0 < diff < 5e-3, f"site {site} {mine}: 3 Adam steps at lr 1e-4 from the UNet copy, got {diff}"


def test_portrait_workflow_runs_with_the_trained_adapter(trained, comfy_server, reference_dir):
    run, _, _ = trained
    shutil.copy(run / "wplus_adapter.bin", comfy_server.scratch / "wplus" / TRAINED_NAME)
    shutil.copy(reference_dir / "faces" / "astronaut.png", comfy_server.base / "input" / "likeness_face.png")
    from likeness.tools.workflows.shipped import smoke_prompt

    prompt = smoke_prompt(json.loads((ROOT / "example_workflows" / "api" / "likeness_portrait.json").read_text()))
    loaders = [n for n in prompt.values() if n["class_type"] == "Likeness_LoadWPlusAdapter"]
    assert loaders, "the portrait workflow loads a W+ adapter"
    for node in prompt.values():
        node["inputs"].update(
            {"EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}}.get(node["class_type"], {})
        )
        if node["class_type"] == "Likeness_LoadWPlusAdapter":
            node["inputs"]["adapter_name"] = TRAINED_NAME
    client = comfy_server.client()
    result = client.run(prompt, timeout=900)
    saved = [img for img in result.images() if img["type"] == "output"]
    assert saved, f"no image saved; outputs: {result.outputs}"
    assert client.view(saved[0])[:8] == b"\x89PNG\r\n\x1a\n"
