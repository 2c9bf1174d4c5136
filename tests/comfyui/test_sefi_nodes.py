"""SeFi nodes in-process on the smoke SD1.5: learn (gradients reach the ten vectors), save/load, apply, errors."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def sd15_all(sd15_checkpoint):
    return sd15_checkpoint


@pytest.fixture()
def identities_dir(comfy_env, tmp_path, monkeypatch):
    """likeness_identities pointed at a temporary folder (never the shared smoke cache)."""
    folder_paths = comfy_env.folder_paths
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "likeness_identities", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path


def _photo(h=80, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, 3, generator=g)


def test_slot_encoder_and_training_denoiser_carry_gradients(sd15_all):
    from likeness.models.sefi.attention import SD15_LOSS_SITES, AttentionCapture
    from likeness.nodes.patching.facea import training_unet
    from likeness.nodes.patching.sefi_text import word_embedding
    from likeness.nodes.patching.sefi_train import slot_encoder, trainable_text_encoder, training_denoiser

    model, clip, _ = sd15_all
    with training_unet(model, "fp32") as unet, trainable_text_encoder(clip), torch.enable_grad():
        encode, person = slot_encoder(clip, "a photo of the face of {}", "person")
        assert torch.equal(person, word_embedding(clip, "person"))
        slots = torch.stack([person, person + 0.1]).requires_grad_(True)
        ctx = encode(slots)
        assert ctx.shape == (2, 77, 768)
        reference = clip.encode_from_tokens(clip.tokenize("a photo of the face of person"))
        assert torch.allclose(ctx[0:1].detach(), reference, atol=1e-5), "slot = 'person' is the reference prompt"
        skip = clip.clone()
        skip.clip_layer(-2)  # CLIP Set Last Layer
        encode_skip, _ = slot_encoder(skip, "a photo of the face of {}", "person")
        want = skip.encode_from_tokens(skip.tokenize("a photo of the face of person"))
        assert torch.allclose(encode_skip(person[None]).detach(), want, atol=1e-5)
        assert not torch.allclose(want, reference, atol=1e-3)
        denoise = training_denoiser(unet, SD15_LOSS_SITES)
        capture = AttentionCapture(reference, SD15_LOSS_SITES)
        x = torch.randn(1, 4, 8, 8)
        out = denoise(x, torch.tensor([2.0]), ctx[0:1], ctx[1:2], capture)
        loss = out.float().pow(2).mean() + capture.loss()
        loss.backward()
    assert out.shape == (1, 4, 8, 8) and sorted(capture.maps) == sorted(SD15_LOSS_SITES)
    assert capture.maps[("input", 7, 0)].shape == (1, 8, 4, 77)  # 2x2 grid at 64 px
    assert slots.grad is not None and slots.grad[0].abs().sum() > 0 and slots.grad[1].abs().sum() > 0


@pytest.fixture()
def inference_sigmas(sd15_all):
    """The sigma buffer as an inference tensor, as a server loads it; the original is put back after.

    Not ``monkeypatch.setattr``: pytest 9 restores an instance attribute by deleting it from ``__dict__``,
    and on an ``nn.Module`` that deletes the buffer itself.
    """
    sampling = sd15_all[0].get_model_object("model_sampling")
    original = sampling.sigmas
    with torch.inference_mode():  # a server loads checkpoints under inference mode: its buffers are inference tensors
        sampling.sigmas = original.clone()
    yield
    sampling.sigmas = original


def test_learn_save_load_apply_round_trip(sd15_all, identities_dir, inference_sigmas):
    from likeness.nodes.patching.sefi_text import COND_KEY, word_embedding
    from likeness.nodes.sefi_learn_node import LikenessLearnIDTokens
    from likeness.nodes.sefi_nodes import LikenessApplyIDTokens, LikenessLoadIDTokens, LikenessSaveIDTokens

    model, clip, vae = sd15_all
    assert model.get_model_object("model_sampling").sigmas.is_inference()
    before = {k: v.clone() for k, v in list(model.model.diffusion_model.state_dict().items())[:3]}
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        out = LikenessLearnIDTokens.execute(model, clip, vae, _photo(), 3, 7, "center", resolution=64)
    identity, curve, crop = out.result
    person = word_embedding(clip, "person")
    moved = [i for i in range(5) if not torch.equal(identity.tokens.keys[i], person)]
    assert 1 <= len(moved) <= 3, "each step trains the pair of one stage"
    assert curve.shape == (1, 256, 512, 3) and crop.shape == (1, 64, 64, 3)
    assert identity.provenance.steps == 3 and len(identity.provenance.base_model_sha256) == 64
    assert identity.provenance.extra["crop"] == {"policy": "center", "box_xywh": [8, 0, 80, 80], "resolution": 64}
    assert identity.tokens.info["training"]["attention_weight"] == 0.003
    for k, v in before.items():
        assert torch.equal(model.model.diffusion_model.state_dict()[k], v), "the MODEL's weights are untouched"
    name = LikenessSaveIDTokens.execute(identity, "alice").result[0]
    assert name == "alice.safetensors" and (identities_dir / name).is_file()
    assert LikenessSaveIDTokens.execute(identity, "alice").result[0] == "alice_00001.safetensors"
    loaded = LikenessLoadIDTokens.execute("alice.safetensors").result[0]
    assert torch.equal(loaded.tokens.keys, identity.tokens.keys)
    patched_model, patched_clip = LikenessApplyIDTokens.execute(model, clip, loaded, "V*", 1.0).result
    assert patched_model is not model and patched_clip is not clip
    cond = patched_clip.encode_from_tokens_scheduled(patched_clip.tokenize("V* on a beach"))
    assert COND_KEY in cond[0][1]


def test_learn_refuses_bad_input_and_stops_on_cancel(sd15_all, identities_dir):
    import comfy.model_management

    from likeness.models.errors import LikenessError
    from likeness.nodes.sefi_learn_node import LikenessLearnIDTokens

    model, clip, vae = sd15_all
    with pytest.raises(LikenessError, match="exactly one photo.*holds 2 images"):
        LikenessLearnIDTokens.execute(model, clip, vae, _photo().repeat(2, 1, 1, 1), 1, 0, "center", resolution=64)
    with pytest.raises(LikenessError, match="no face analyzer is connected"):
        LikenessLearnIDTokens.execute(model, clip, vae, _photo(), 1, 0, "face", resolution=64)
    with pytest.raises(LikenessError, match="one-token word"):
        LikenessLearnIDTokens.execute(model, clip, vae, _photo(), 1, 0, "center", resolution=64, init_word="tall guy")
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            LikenessLearnIDTokens.execute(model, clip, vae, _photo(), 5, 0, "center", resolution=64)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert list(identities_dir.iterdir()) == []


def test_load_refuses_a_facea_file(comfy_env, identities_dir):
    from likeness.models.errors import CheckpointError
    from likeness.models.finetune import Provenance, save_identity_file
    from likeness.nodes.sefi_nodes import LikenessLoadIDTokens

    save_identity_file(
        identities_dir / "bob.safetensors",
        {"x": torch.zeros(1)},
        kind="facea",
        meta={},
        provenance=Provenance([], 0, ""),
    )
    with pytest.raises(CheckpointError, match="bob.safetensors holds a 'facea' identity"):
        LikenessLoadIDTokens.execute("bob.safetensors")
