"""train-wplus --smoke: the adapter learns, the checkpoint loads, resume continues exactly; stage 2 losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from training_runs import assert_learns, smoke_run  # noqa: E402

from likeness.models.errors import LikenessError  # noqa: E402
from likeness.models.files.checkpoints import load_file  # noqa: E402
from likeness.models.training.smoke import tiny_unet  # noqa: E402
from likeness.models.training.state import read_log  # noqa: E402
from likeness.models.training.wplus import sites_of  # noqa: E402
from likeness.models.wplus_adapter import load_wplus_adapter  # noqa: E402
from likeness.models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet, encode_context  # noqa: E402
from likeness.tools.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, one_thread):
    return smoke_run(tmp_path_factory, "train-wplus")


def test_smoke_stage1_learns_logs_and_writes_a_loadable_official_checkpoint(stage1_run, tmp_path):
    log = read_log(stage1_run)
    assert [r["step"] for r in log] == list(range(1, 31))
    assert all(r["lr"] == {"w_proj": 3e-3, "wplus_adapter": 3e-3} for r in log)
    assert all(set(r["parts"]) == {"rec"} and np.isfinite(r["loss"]) for r in log)
    assert_learns("train-wplus", stage1_run, tmp_path / "control", "the adapter")

    ckpt = stage1_run / "checkpoint-000030" / "wplus_adapter.bin"
    raw = load_file(ckpt)
    assert set(raw) == {"w_proj", "wplus_adapter"}
    assert sorted({int(k.split(".")[0]) for k in raw["wplus_adapter"]}) == list(range(1, 32, 2))
    unet = tiny_unet("sd15")
    sites = sites_of(unet, smoke=True)
    adapter = load_wplus_adapter(ckpt, sites=sites)
    with pytest.raises(LikenessError, match="W\\+ adapter"):
        load_wplus_adapter(ckpt)  # the real SD1.5 table refuses the tiny widths, naming the problem
    for site in sites:  # trained away from the official initialisation (copies of to_q/k/v)
        attn = unet.get_submodule(site.diffusers_name[: -len(".processor")])
        assert not torch.equal(adapter.layer(site).to_k_wplus.weight, attn.to_k.weight)
    torch.testing.assert_close(load_file(stage1_run / "wplus_adapter.bin")["w_proj"]["norm.bias"],
                               raw["w_proj"]["norm.bias"])  # fmt: skip

    # the file drives the project's own diffusers host: W+ changes the output, scale 0 does not
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    text = torch.randn(1, 77, 768)
    with torch.no_grad():
        plain = unet(x, t, torch.cat([text, torch.zeros(1, 4, 768)], 1)).sample
        apply_wplus_adapter_to_unet(unet, adapter, scale=1.0)
        a = unet(x, t, encode_context(text, torch.randn(1, 18, 512), adapter)).sample
        b = unet(x, t, encode_context(text, torch.randn(1, 18, 512), adapter)).sample
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)

    strip = stage1_run / "validation" / "step-000030.png"
    from PIL import Image

    assert Image.open(strip).size == (128, 64)
    config = json.loads((stage1_run / "config.json").read_text())
    assert config["config"]["steps"] == 30 and config["args"]["smoke"] is True


def test_resume_continues_from_the_saved_step_with_the_same_data_order(tmp_path, cli_run):
    common = ["train-wplus", "--smoke", "--save-every", "3", "--validate-every", "1000"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*common, "--out", str(straight), "--steps", "6"]) == 0
    assert main([*common, "--out", str(split), "--steps", "3"]) == 0
    assert main([*common, "--out", str(split), "--steps", "6"]) == 0  # resumes at checkpoint-000003
    a, b = read_log(straight), read_log(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    wa, wb = load_file(straight / "wplus_adapter.bin"), load_file(split / "wplus_adapter.bin")
    for part in ("w_proj", "wplus_adapter"):
        for key in wa[part]:
            torch.testing.assert_close(wb[part][key], wa[part][key], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in split.glob("checkpoint-*")) == ["checkpoint-000003", "checkpoint-000006"]

    assert main([*common, "--out", str(split), "--steps", "6"]) == 0  # already there: nothing to do
    assert len(read_log(split)) == 6
    with pytest.raises(LikenessError, match=r"batch_size: saved 4, now 2"):
        cli_run([*common, "--out", str(split), "--steps", "9", "--batch-size", "2"])


def test_stage2_trains_only_the_site_layers_with_the_three_losses(stage1_run, tmp_path):
    out = tmp_path / "s2"
    stage1 = stage1_run / "wplus_adapter.bin"
    argv = ["train-wplus", "--smoke", "--stage", "2", "--stage1", str(stage1), "--out", str(out), "--steps", "4"]
    assert main(argv) == 0
    log = read_log(out)
    assert all(set(r["parts"]) == {"rec", "disen", "preserve"} for r in log)
    for r in log:
        p = r["parts"]
        assert r["loss"] == pytest.approx(p["rec"] + 2.0 * p["disen"] + 1.0 * p["preserve"], rel=1e-5)
    assert all(r["lr"] == {"wplus_adapter": 3e-3} for r in log)
    before, after = load_file(stage1), load_file(out / "wplus_adapter.bin")
    for key in before["w_proj"]:
        assert torch.equal(before["w_proj"][key], after["w_proj"][key]), "w_proj is frozen in stage 2"
    assert any(not torch.equal(before["wplus_adapter"][k], after["wplus_adapter"][k]) for k in before["wplus_adapter"])
    assert (out / "smoke_data" / "directions" / "att_direction_scale.pth").is_file()


def test_stage2_needs_the_stage1_file_and_sd15(tmp_path, cli_run):
    with pytest.raises(LikenessError, match="--stage1"):
        cli_run(["train-wplus", "--smoke", "--stage", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(LikenessError, match="not SD1.5's"):
        sites_of(tiny_unet("sdxl"))
    with pytest.raises(LikenessError, match="not SD1.5's"):
        sites_of(tiny_unet("sd15"))  # right layout, but the tiny widths are refused unless smoke
    assert len(sites_of(tiny_unet("sd15"), smoke=True)) == 16


def test_cli_errors_are_clear(tmp_path, caplog, cli_run):
    assert main(["train-wplus", "--out", str(tmp_path / "r")]) == 2
    assert "Give the dataset with --data" in caplog.text
    with pytest.raises(LikenessError, match="not a prepared training dataset"):
        cli_run(["train-wplus", "--out", str(tmp_path / "r"), "--data", str(tmp_path)])
    from likeness.models.training.smoke import write_smoke_dataset

    data = write_smoke_dataset(tmp_path / "d", "wplus")
    with pytest.raises(LikenessError, match="Give the SD1.5 base model with --base"):
        cli_run(["train-wplus", "--out", str(tmp_path / "r"), "--data", str(data)])
    with pytest.raises(LikenessError, match="prepared for method 'pstf' but this trainer needs 'wplus'"):
        cli_run(
            ["train-wplus", "--out", str(tmp_path / "r"), "--data", str(write_smoke_dataset(tmp_path / "p", "pstf"))]
        )


def test_two_processes_share_the_batches_and_write_one_checkpoint(tmp_path):
    """The multi-GPU code path (DDP, sharded sample order, main-process saving) on 2 CPU processes (gloo)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    cmd = [*launch, "models.cli", "train-wplus", "--smoke", "--out", str(out), "--steps", "3", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_log(out)
    assert [r["samples"] for r in log] == [4, 8, 12], "2 processes x 2 samples per step"
    assert proc.stdout.count("trained steps 0 -> 3") == 1, "only the main process reports and saves"
    adapter = load_wplus_adapter(
        out / "checkpoint-000003" / "wplus_adapter.bin", sites=sites_of(tiny_unet("sd15"), True)
    )
    assert len(adapter.sites) == 16


def test_bf16_mixed_precision_and_gradient_accumulation(tmp_path):
    out = tmp_path / "acc"
    argv = ["train-wplus", "--smoke", "--out", str(out), "--steps", "3", "--batch-size", "2", "--grad-accum", "2",
            "--mixed-precision", "bf16", "--validate-every", "100"]  # fmt: skip
    assert main(argv) == 0
    log = read_log(out)
    assert [r["samples"] for r in log] == [4, 8, 12] and all(np.isfinite(r["loss"]) for r in log)
    state = torch.load(out / "checkpoint-000003" / "training_state.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {3.0}, "one optimizer step per 2 micro"
    weights = load_file(out / "wplus_adapter.bin")
    assert all(v.dtype == torch.float32 for part in weights.values() for v in part.values()), "fp32 master weights"
