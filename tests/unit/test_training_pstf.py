"""train-pstf --smoke: the W+ stream learns, the file loads with the PSTF loader, resume is exact; init and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from training_runs import assert_learns, mean, smoke_run  # noqa: E402

from likeness.models.errors import CheckpointError, LikenessError  # noqa: E402
from likeness.models.face.types import Face  # noqa: E402
from likeness.models.files.checkpoints import load_file  # noqa: E402
from likeness.models.pstf import load_pstf_adapter  # noqa: E402
from likeness.models.pstf.diffusers_unet import apply_pstf_to_unet, encode_context  # noqa: E402
from likeness.models.training.pstf import init_pstf_adapter, pstf_sites_of  # noqa: E402
from likeness.models.training.pstf_data import draw_pstf_drop, pstf_sample, render_edit_targets  # noqa: E402
from likeness.models.training.smoke import SMOKE_RESAMPLER, tiny_unet, write_smoke_pstf_files  # noqa: E402
from likeness.models.training.state import read_log  # noqa: E402
from likeness.tools.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pstf_run(tmp_path_factory, one_thread):
    return smoke_run(tmp_path_factory, "train-pstf")


def test_smoke_pstf_learns_and_writes_the_official_layout(pstf_run, tmp_path):
    log = read_log(pstf_run)
    assert [r["step"] for r in log] == list(range(1, 31))
    assert all(r["lr"] == {"image_style_proj": 3e-3, "style_kv": 3e-3} for r in log)
    assert_learns("train-pstf", pstf_run, tmp_path / "control", "the W+ stream")
    assert 0 < mean([r["parts"]["edited"] for r in log]) < 0.6, "the W+ augmentation ran on some samples"

    sites = pstf_sites_of(tiny_unet("sdxl"), smoke=True)
    ckpt = pstf_run / "checkpoint-000030" / "pytorch_model.bin"
    assert set(load_file(ckpt)) == {"image_proj", "image_style_proj", "ip_adapter"}
    adapter = load_pstf_adapter(ckpt, sites=sites, resampler=SMOKE_RESAMPLER)
    assert adapter.kind == "PSTF-AttControl" and len(adapter.sites) == 11
    with pytest.raises(CheckpointError):
        load_pstf_adapter(ckpt)  # the real SDXL table refuses the tiny layout
    instantid = load_file(pstf_run / "smoke_data" / "files" / "ip-adapter.bin")
    for key, value in instantid["image_proj"].items():  # the identity stream stayed frozen
        torch.testing.assert_close(adapter.image_proj.state_dict()[key], value)
    for key, value in instantid["ip_adapter"].items():
        torch.testing.assert_close(adapter.ip_adapter.state_dict()[key], value)
    unet = tiny_unet("sdxl")
    for site in sites:  # trained away from the init (copies of the UNet's to_k)
        attn = unet.get_submodule(site.diffusers_name[: -len(".processor")])
        assert not torch.equal(adapter.layer(site).to_k_style.weight, attn.to_k.weight)

    # the file drives the project's diffusers host; the W+ scale changes the output
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    ctx = encode_context(torch.randn(1, 77, 2048), adapter.id_tokens(torch.randn(1, 512)),
                         adapter.wplus_tokens(torch.randn(1, 18, 512)))  # fmt: skip
    apply_pstf_to_unet(unet, adapter, scale=1.0, scale_style=1.0)
    with torch.no_grad():
        a = unet(x, t, ctx, added_cond_kwargs=added).sample
        from likeness.models.pstf.diffusers_unet import set_pstf_scale

        set_pstf_scale(unet, scale_style=0.0)
        b = unet(x, t, ctx, added_cond_kwargs=added).sample
    assert not torch.allclose(a, b)
    from PIL import Image

    assert Image.open(pstf_run / "validation" / "step-000030.png").size == (192, 64)


def test_pstf_resume_is_exact(tmp_path):
    common = ["train-pstf", "--smoke", "--save-every", "3", "--validate-every", "1000"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*common, "--out", str(straight), "--steps", "6"]) == 0
    assert main([*common, "--out", str(split), "--steps", "3"]) == 0
    assert main([*common, "--out", str(split), "--steps", "6"]) == 0
    np.testing.assert_allclose([r["loss"] for r in read_log(split)], [r["loss"] for r in read_log(straight)], rtol=1e-5)
    a, b = load_file(straight / "pytorch_model.bin"), load_file(split / "pytorch_model.bin")
    for part in a:
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key], rtol=1e-5, atol=1e-6)


def test_official_initialisation(tmp_path):
    unet = tiny_unet("sdxl")
    sites = pstf_sites_of(unet, smoke=True)
    instantid, _ = write_smoke_pstf_files(tmp_path, sites)
    adapter = init_pstf_adapter(unet, sites, instantid, SMOKE_RESAMPLER)
    ident = load_file(instantid)
    for site in sites:
        attn, layer = unet.get_submodule(site.diffusers_name[: -len(".processor")]), adapter.layer(site)
        assert torch.equal(layer.to_k_style.weight, attn.to_k.weight)
        assert torch.equal(layer.to_v_style.weight, attn.to_v.weight)
        assert torch.equal(layer.to_k_ip.weight, ident["ip_adapter"][f"{site.index}.to_k_ip.weight"])
    assert torch.equal(adapter.image_proj.latents, ident["image_proj"]["latents"])
    torch.save({"image_proj": {}, "image_style_proj": {}, "ip_adapter": {}}, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError):
        init_pstf_adapter(unet, sites, tmp_path / "bad.bin", SMOKE_RESAMPLER)
    with pytest.raises(LikenessError, match="not SDXL's 70"):
        pstf_sites_of(unet)
    with pytest.raises(LikenessError, match="not in SDXL's layout"):
        pstf_sites_of(tiny_unet("sd15"), smoke=True)


def test_samples_dropout_and_augmentation(tmp_path):
    from likeness.models.directions.formats import load_directions
    from likeness.models.training.dataset import load_items
    from likeness.models.training.smoke import write_smoke_dataset

    rng = np.random.default_rng(0)
    draws = [draw_pstf_drop(rng) for _ in range(20000)]
    for pattern in ((True, False, False), (False, True, False), (False, False, True), (True, True, True)):
        assert abs(np.mean([d == pattern for d in draws]) - 0.05) < 0.006
    item = load_items(write_smoke_dataset(tmp_path / "d", "pstf", n=1), "pstf")[0]
    _, deltas_path = write_smoke_pstf_files(tmp_path / "f", pstf_sites_of(tiny_unet("sdxl"), smoke=True))
    deltas = load_directions(deltas_path).directions
    samples = [pstf_sample(item, np.random.default_rng(s), 32, deltas) for s in range(60)]
    edited = [s for s in samples if s["edit"]]
    assert 8 < len(edited) < 30 and all(s["wplus"].any() for s in edited)
    for s in edited:
        delta = s["wplus"] - item.tensors["wplus"]
        strength = [float((delta * d.vector).sum() / (d.vector**2).sum()) for d in deltas.values()]
        assert any(0.1 <= k <= 2.5 and torch.allclose(delta, k * d.vector, atol=1e-4)
                   for k, d in zip(strength, deltas.values(), strict=True))  # fmt: skip
    kps_img = samples[0]["kps_image"]
    kps = item.tensors["kps"].numpy() * 32 / 64
    x, y = np.round(kps[2]).astype(int)
    assert kps_img.shape == (3, 32, 32) and float(kps_img[:, y, x].max()) > 0.9, "a keypoint dot is drawn"


def test_render_edit_targets_replaces_only_edited_samples():
    class OneFace:
        def detect(self, image):
            assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
            kps = np.array([[10, 12], [22, 12], [16, 17], [11, 23], [21, 23]], np.float32)
            return [Face(bbox=[4, 4, 28, 28], score=0.9, kps=kps)]

    images, kps_images = torch.zeros(3, 3, 32, 32), torch.zeros(3, 3, 32, 32)
    edit = torch.tensor([False, True, False])
    moved = render_edit_targets(images, kps_images, torch.randn(3, 18, 512), edit,
                                lambda w: torch.full((w.shape[0], 3, 16, 16), 0.5), OneFace())  # fmt: skip
    assert moved == 1
    assert not images[0].any() and not images[2].any() and torch.allclose(images[1], torch.full_like(images[1], 0.5))
    assert kps_images[1].max() > 0.9 and not kps_images[0].any()
    from likeness.models.training.pstf_data import smoke_decode_fn

    images2, kps2 = torch.zeros(3, 3, 32, 32), kps_images.clone()
    assert render_edit_targets(images2, kps2, torch.randn(3, 18, 512), edit, smoke_decode_fn(0), None) == 0
    assert images2[1].abs().sum() > 0 and not images2[0].any() and torch.equal(kps2, kps_images)


def test_cli_errors_name_what_is_missing(tmp_path, cli_run):
    from likeness.models.training.smoke import write_smoke_dataset

    data = write_smoke_dataset(tmp_path / "d", "pstf")
    with pytest.raises(LikenessError, match="--base, --instantid, --controlnet"):
        cli_run(["train-pstf", "--out", str(tmp_path / "r"), "--data", str(data), "--no-wplus-augmentation"])
    with pytest.raises(LikenessError, match="needs --deltas .* and --e4e"):
        cli_run(["train-pstf", "--out", str(tmp_path / "r"), "--data", str(data), "--base", "x", "--instantid", "y"])
