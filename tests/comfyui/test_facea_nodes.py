"""FaceA-Net nodes in real ComfyUI (in-process, CPU, smoke SD1.5 inpainting UNet).

Nodes are called the way the executor calls them: inside ``torch.inference_mode()``, with a model
loaded inside it too (its weights are inference tensors, which training must cope with).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

FAST = dict(
    class_word="woman",
    steps=2,
    batch_size=1,
    seed=3,
    lora_lr=1e-3,
    feat_lr=2e-3,
    loss_region="mask",
    training_dtype="auto",
    gradient_checkpointing=True,
    on_no_face="error",
    rank=4,
    feat_tokens=0,
    train_eye_left=True,
    train_eye_right=True,
    train_nose=True,
    train_mouth=True,
    lora_targets="attention",
    resolution=128,
    crop_factor=2.0,
    mask_grow=8,
)


def _photo(reference_dir, name, size=256):
    img = Image.open(reference_dir / "faces" / f"{name}.png").convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img)).float()[None] / 255.0


@pytest.fixture(scope="module")
def photos(reference_dir):
    return torch.cat([_photo(reference_dir, "astronaut"), _photo(reference_dir, "grace_hopper")])


@pytest.fixture(scope="module")
def inpaint(comfy_env):
    """(model, clip, vae) of the smoke SD1.5 inpainting checkpoint, loaded under inference mode like the server."""
    import comfy.sd

    from likeness.tools.smoke.writers import SMOKE_INPAINT_CHECKPOINT

    path = comfy_env.models / "checkpoints" / SMOKE_INPAINT_CHECKPOINT
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return SimpleNamespace(model=model, clip=clip, vae=vae)


@pytest.fixture
def identities(comfy_env, tmp_path, monkeypatch):
    """A temporary likeness_identities folder in front of the smoke one."""
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths["likeness_identities"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "likeness_identities", ([str(tmp_path), *paths], exts))
    folder_paths.filename_list_cache.pop("likeness_identities", None)
    yield tmp_path
    folder_paths.filename_list_cache.pop("likeness_identities", None)


def _unet_probe(model, seed=0):
    """UNet output of the (unpatched) model on a fixed input, to prove the input MODEL is unchanged."""
    import comfy.model_management

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    cc = torch.randn(1, 5, 8, 8, generator=g) if model.model.concat_keys else None
    ctx = torch.randn(1, 77, 768, generator=g)
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([model])
        return model.model.apply_model(x, torch.tensor([2.0]), c_concat=cc, c_crossattn=ctx).clone()


def _train(inpaint, photos, **kw):
    from likeness.nodes.facea_nodes import LikenessTrainFaceA

    with torch.inference_mode():
        return LikenessTrainFaceA.execute(inpaint.model, inpaint.clip, inpaint.vae, photos, **{**FAST, **kw}).args


def test_schedule_is_comfyuis_sd15_schedule(inpaint):
    from likeness.models.finetune import SD15_SCHEDULE

    assert torch.equal(SD15_SCHEDULE.sigmas, inpaint.model.model.model_sampling.sigmas.cpu())


def test_sd15_check_refuses_sdxl_and_v_prediction():
    import comfy.model_base

    from likeness.models.errors import LikenessError
    from likeness.nodes.patching.facea import check_sd15

    def stub(name, unet, model_type=comfy.model_base.ModelType.EPS):
        config = type(name, (), {"unet_config": unet})()
        return SimpleNamespace(model=SimpleNamespace(model_config=config, model_type=model_type))

    sdxl = stub("SDXL", {"context_dim": 2048, "adm_in_channels": 2816, "in_channels": 4})
    with pytest.raises(LikenessError, match=r"needs a Stable Diffusion 1.5 model .* got SDXL .*SDXL works"):
        check_sd15(sdxl, "Train Face (FaceA)")
    vpred = stub("SD15", {"context_dim": 768, "in_channels": 4}, comfy.model_base.ModelType.V_PREDICTION)
    with pytest.raises(LikenessError, match="V_PREDICTION"):
        check_sd15(vpred, "Apply FaceA Identity")
    assert check_sd15(stub("SD15", {"context_dim": 768, "in_channels": 9}), "x") is True
    assert check_sd15(stub("SD15", {"context_dim": 768, "in_channels": 4}), "x") is False


def test_train_save_load_apply_and_refine(inpaint, photos, identities, comfy_env):
    from likeness.models.facea import TASKS, FaceAIdentity
    from likeness.nodes.facea_identity_nodes import (
        LikenessApplyFaceAIdentity,
        LikenessLoadFaceAIdentity,
        LikenessSaveFaceAIdentity,
    )
    from likeness.nodes.refine_node import LikenessFaceRefine

    before = _unet_probe(inpaint.model)
    weights = dict(inpaint.model.model.diffusion_model.named_parameters())
    identity, lora, curve, crops, info = _train(inpaint, photos)
    # the input MODEL is untouched: same parameter objects, no leftover forwards, same output
    assert all(p is weights[n] for n, p in inpaint.model.model.diffusion_model.named_parameters())
    assert not [m for m in inpaint.model.model.diffusion_model.modules() if "forward" in m.__dict__]
    assert torch.equal(_unet_probe(inpaint.model), before)

    assert identity.tasks == TASKS and identity.class_word == "woman"
    assert all(s.count == 4 for s in identity.slots.values())
    assert identity.slots["eye_left"].prompt == "a woman left eye" and identity.slots["face"].start == 4
    assert len(lora) == 56 * 3 and set(lora) == set(identity.lora)  # q/k/v/out of attn1+attn2 in 7 blocks
    assert identity.provenance.steps == 2 and len(identity.provenance.photo_sha256) == 2
    assert len(identity.provenance.base_model_sha256) == 64
    assert identity.meta["lora"] == {"rank": 4, "alpha": 4.0, "targets": "attention", "modules": 56}
    assert curve.shape == (1, 256, 512, 3) and crops.shape == (2, 128, 128, 3)
    assert "trained 2 step(s)" in info and "faces found in 2/2" in info
    # the face vectors (trained every step) and those of the local task(s) drawn moved away from the prompt's own
    # outputs they started from; 2 steps draw at most 2 of the 4 local tasks
    moved = [
        t for t in TASKS if not torch.equal(identity.vectors[t], identity.contexts[t][identity.slots[t].start :][:4])
    ]
    assert moved[0] == "face" and 2 <= len(moved) <= 3

    (path,) = LikenessSaveFaceAIdentity.execute(identity, "alice").args
    assert path == str(identities / "alice.safetensors")
    assert LikenessSaveFaceAIdentity.execute(identity, "alice").args[0].endswith("alice_00001.safetensors")
    loaded, lora2, text = LikenessLoadFaceAIdentity.execute("alice.safetensors").args
    for k, v in identity.tensors().items():  # bit-exact round trip
        assert torch.equal(loaded.tensors()[k], v) and loaded.tensors()[k].dtype == v.dtype
    assert loaded.provenance == identity.provenance and "class word 'woman'" in text
    assert isinstance(loaded, FaceAIdentity) and set(lora2) == set(lora)

    cond = inpaint.clip.encode_from_tokens_scheduled(inpaint.clip.tokenize("a smiling face"))
    neg = inpaint.clip.encode_from_tokens_scheduled(inpaint.clip.tokenize("lowres"))
    with torch.inference_mode():
        model2, cond2 = LikenessApplyFaceAIdentity.execute(inpaint.model, cond, loaded, 1.0).args
    assert model2 is not inpaint.model and len(model2.patches) == 56
    assert cond2[0][0].shape == (1, 77 * 6, 768)
    assert torch.equal(cond2[0][0][:, :77], cond[0][0]) and torch.equal(cond2[0][0][0, 77:], loaded.prompt_context()[0])
    assert cond[0][0].shape == (1, 77, 768)  # the input conditioning is not mutated
    with torch.inference_mode():
        out = LikenessFaceRefine.execute(
            photos[:1],
            model2,
            inpaint.vae,
            cond2,
            neg,
            seed=1,
            steps=1,
            cfg=2.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=0.6,
            mask_region="face",
            grow=4,
            crop_factor=2.0,
            guide_size=64,
            max_size=128,
            feather=3,
            noise_mask_feather=4,
            color_match="none",
        ).args
    refined, mask = out[0], out[1]
    outside = mask[0] == 0
    assert torch.equal(refined[0][outside], photos[0][outside])
    assert (refined[0][mask[0] > 0.5] - photos[0][mask[0] > 0.5]).abs().mean() > 0.01
    assert torch.equal(_unet_probe(inpaint.model), before)


def test_exported_lora_through_comfyuis_lora_path_equals_the_training_forward(inpaint, photos):
    """What training optimised (bypass adapters) is what LoraLoader applies (weight patches)."""
    import comfy.model_management

    from likeness.nodes.patching.facea import LoRATraining, apply_identity, training_unet

    identity = _train(inpaint, photos, steps=1, lora_lr=0.05)[0]
    g = torch.Generator().manual_seed(0)
    x, cc = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 5, 16, 16, generator=g)
    ctx, sigma = identity.prompt_context(["face"]), torch.tensor([3.0])
    with torch.inference_mode():
        with training_unet(inpaint.model, "fp32") as unet:
            lora = LoRATraining(unet.base.diffusion_model, "attention", 4, init=identity.lora, device=unet.device)
            lora.inject()
            try:
                with torch.no_grad():
                    trained = unet.denoiser(x, sigma, ctx, cc)
            finally:
                lora.eject()
        patched, _ = apply_identity(inpaint.model, [[ctx, {}]], identity, 1.0)
        comfy.model_management.load_models_gpu([patched])
        applied = patched.model.apply_model(x, sigma, c_concat=cc, c_crossattn=ctx).float()
        comfy.model_management.load_models_gpu([inpaint.model])
        plain = inpaint.model.model.apply_model(x, sigma, c_concat=cc, c_crossattn=ctx).float()
    assert (trained - plain).abs().max() > 1e-3  # the LoRA does something
    assert torch.allclose(applied, trained, atol=2e-4, rtol=1e-4), (applied - trained).abs().max()


def test_transplant_trains_only_the_chosen_attribute(inpaint, photos):
    from likeness.nodes.facea_nodes import LikenessTransplantFaceAAttribute

    identity = _train(inpaint, photos[:1], steps=1)[0]
    with torch.inference_mode():
        new, lora, _, crops, info = LikenessTransplantFaceAAttribute.execute(
            identity,
            inpaint.model,
            inpaint.vae,
            photos[1:],
            attribute="nose",
            steps=2,
            batch_size=1,
            seed=0,
            lora_lr=1e-3,
            feat_lr=2e-3,
            loss_region="mask",
            training_dtype="fp32",
            gradient_checkpointing=False,
            on_no_face="error",
        ).args
    assert new.provenance.steps == 3 and new.provenance.photo_sha256 == identity.provenance.photo_sha256
    (transplant,) = new.meta["transplants"]
    assert transplant["tasks"] == ["nose"] and transplant["from_step"] == 1 and len(transplant["photo_sha256"]) == 1
    assert not torch.equal(new.vectors["nose"], identity.vectors["nose"])
    for task in ("face", "eye_left", "eye_right", "mouth"):
        assert torch.equal(new.vectors[task], identity.vectors[task])
    assert any(not torch.equal(lora[k], identity.lora[k]) for k in lora)
    assert crops.shape[0] == 1 and "trained 2 step(s)" in info


def test_interrupted_training_writes_nothing_and_restores_the_model(inpaint, photos, identities, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    before = _unet_probe(inpaint.model)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if value >= 1:
            mm.interrupt_current_processing(True)  # the user presses Cancel during step 2

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _train(inpaint, photos, steps=20)
    finally:
        mm.interrupt_current_processing(False)
    assert 1 in seen and max(seen) < 20
    assert list(identities.iterdir()) == []
    assert not [m for m in inpaint.model.model.diffusion_model.modules() if "forward" in m.__dict__]
    assert torch.equal(_unet_probe(inpaint.model), before)


def test_lora_part_loads_in_a_stock_loraloader_against_the_smoke_sd15(
    sd15_checkpoint, photos, comfy_env, tmp_path, monkeypatch, caplog
):
    """Trained on the full-size smoke SD1.5 (4 channels: the noise-mask path), saved, read by nodes.LoraLoader."""
    import folder_paths

    from likeness.models.facea import FaceAIdentity
    from likeness.nodes.facea_nodes import LikenessTrainFaceA

    model, clip, vae = sd15_checkpoint
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        identity, _, _, _, info = LikenessTrainFaceA.execute(
            model,
            clip,
            vae,
            photos[:1],
            **{
                **FAST,
                "steps": 1,
                "resolution": 64,
                "train_nose": False,
                "train_mouth": False,
                "train_eye_right": False,
                "mask_grow": 16,
            },
        ).args
    assert "not an inpainting model" in info and "not an inpainting model" in caplog.text
    path = identity.save(tmp_path / "loras" / "alice_facea.safetensors")
    assert FaceAIdentity.load(path).tasks == ("face", "eye_left")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    folder_paths.filename_list_cache.pop("loras", None)
    caplog.clear()
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        model_lora, clip_lora = comfy_env.nodes.LoraLoader().load_lora(model, clip, "alice_facea.safetensors", 1.0, 1.0)
    folder_paths.filename_list_cache.pop("loras", None)
    modules = {k[len("diffusion_model.") : -len(".alpha")] for k in identity.lora if k.endswith(".alpha")}
    assert len(modules) == 16 * 8  # every attention projection of SD1.5's 16 transformer blocks
    assert set(model_lora.patches) == {f"diffusion_model.{m}.weight" for m in modules}
    not_loaded = [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert not_loaded and all("likeness.facea." in line for line in not_loaded)  # only the [feat] tensors
    assert len(not_loaded) == 4  # context + vectors of the two prompts
