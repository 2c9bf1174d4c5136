"""FaceA [feat] vectors (HiPer-style post-encoder vectors) and the identity file."""

from __future__ import annotations

import pytest
import torch

from likeness.models.errors import CheckpointError, LikenessError
from likeness.models.facea import TASKS, FaceAIdentity, FeatVectors, PromptSlot, lora_modules, task_prompt
from likeness.models.finetune import Provenance, read_identity_header


def _slots(count=3, cls="man"):
    return {t: PromptSlot(t, task_prompt(cls, t), len(task_prompt(cls, t).split()), count) for t in TASKS}


def _contexts(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(77, 768, generator=g) for t in TASKS}


def _lora(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (o, i) in {
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q": (320, 320),
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k": (320, 768),
    }.items():
        out[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(o, 8, generator=g)
        out[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(8, i, generator=g)
        out[f"diffusion_model.{name}.alpha"] = torch.tensor(8.0)
    return out


def _identity(**kw):
    feat = FeatVectors(_slots(), _contexts())
    with torch.no_grad():
        for v in feat.vectors.values():
            v.add_(1.0)  # "trained"
    ctx, vec = feat.exported()
    prov = Provenance(photo_sha256=["0" * 64], steps=600, base_model_sha256="1" * 64, extra={"base_model_file": "x"})
    args = dict(
        lora=_lora(),
        slots=feat.slots,
        contexts=ctx,
        vectors=vec,
        class_word="man",
        provenance=prov,
        meta={"lora": {"rank": 8, "alpha": 8.0}},
    )
    args.update(kw)
    return FaceAIdentity(**args)


def test_feat_vectors_start_right_after_the_words_and_only_they_train():
    slot = PromptSlot("eye_left", "a man left eye", 4, 3)
    assert slot.start == 5  # [start token, a, man, left, eye] then the vectors
    ctx = torch.randn(77, 768)
    feat = FeatVectors({"eye_left": slot}, {"eye_left": ctx[None]})
    assert torch.equal(feat.vectors["eye_left"].detach(), ctx[5:8])  # initialised from the prompt's own outputs
    assert torch.equal(feat.context("eye_left"), ctx)  # so nothing changes before training
    out = feat.contexts(["eye_left", "eye_left"])
    assert out.shape == (2, 77, 768)
    (out[:, 5:8].sum() + out[:, :5].sum() + out[:, 8:].sum()).backward()
    assert torch.equal(feat.vectors["eye_left"].grad, torch.full((3, 768), 2.0))
    assert [n for n, p in feat.named_parameters()] == ["vectors.eye_left"]
    with pytest.raises(LikenessError, match="do not fit into 77 positions"):
        PromptSlot("face", "x", 74, 4)
    with pytest.raises(LikenessError, match="no \\[feat\\] prompt for task 'nose'"):
        feat.context("nose")


def test_identity_prompt_context_is_the_token_concatenation():
    ident = _identity()
    ctx = ident.prompt_context()
    assert ctx.shape == (1, 77 * 5, 768)
    for k, task in enumerate(TASKS):
        block = ctx[0, 77 * k : 77 * (k + 1)]
        s = ident.slots[task]
        assert torch.equal(block[s.start : s.start + s.count], ident.vectors[task])
        assert torch.equal(block[: s.start], ident.contexts[task][: s.start])
        assert torch.equal(block[s.start + s.count :], ident.contexts[task][s.start + s.count :])
    assert ident.prompt_context(["face"]).shape == (1, 77, 768)
    assert torch.equal(ident.prompt_context(["face", "mouth"])[0, 77:], ident.task_context("mouth"))


def test_identity_file_round_trips_bit_exactly(tmp_path):
    ident = _identity()
    path = ident.save(tmp_path / "him.safetensors")
    back = FaceAIdentity.load(path)
    assert back.class_word == "man" and back.tasks == TASKS
    for field in ("lora", "contexts", "vectors"):
        a, b = getattr(ident, field), getattr(back, field)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert back.slots == ident.slots and back.provenance == ident.provenance
    assert back.meta == {"lora": {"rank": 8, "alpha": 8.0}}
    header = read_identity_header(path)
    assert header["kind"] == "facea" and '"class_word": "man"' in header["meta"]
    assert torch.equal(back.prompt_context(), ident.prompt_context())


def test_lora_key_validation():
    lora = _lora()
    assert lora_modules(lora) == [
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k",
    ]
    bad = dict(lora)
    bad.pop("diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.alpha")
    with pytest.raises(CheckpointError, match=r"attn1.to_q' lacks \['.alpha'\]"):
        lora_modules(bad)
    with pytest.raises(CheckpointError, match="unexpected LoRA key 'lora_unet_x.lora_up.weight'"):
        lora_modules({**lora, "lora_unet_x.lora_up.weight": torch.zeros(1)})
    odd = dict(lora)
    odd["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_down.weight"] = torch.zeros(4, 768)
    with pytest.raises(CheckpointError, match="do not chain"):
        lora_modules(odd)


def test_malformed_identities_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="class word 'cat'"):
        _identity(class_word="cat")
    slots = _slots()
    slots.pop("face")
    with pytest.raises(CheckpointError, match="must include 'face'"):
        _identity(slots=slots)
    vec = _identity().vectors
    vec["nose"] = torch.zeros(2, 768)
    with pytest.raises(LikenessError, match="do not match 3 vectors"):
        _identity(vectors=vec)
    ident = _identity()
    path = ident.save(tmp_path / "x.safetensors")
    from safetensors.torch import load_file, save_file

    from likeness.models.finetune import read_identity_header as header

    tensors, meta = load_file(str(path)), header(path)
    tensors.pop("likeness.facea.mouth.vectors")
    save_file(tensors, str(tmp_path / "y.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="y.safetensors: tensor 'likeness.facea.mouth.vectors' is missing"):
        FaceAIdentity.load(tmp_path / "y.safetensors")
