"""SeFi ID tokens on ComfyUI's real SD1.5 (smoke weights), in-process on the CPU: CLIP slots and the UNet patch."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

STEPS = 5


@pytest.fixture(scope="module")
def sd15(sd15_checkpoint):
    return sd15_checkpoint[0], sd15_checkpoint[1]


def _tokens(seed=0, person=None):
    from likeness.models.sefi.tokens import IdTokens

    g = torch.Generator().manual_seed(seed)
    init = torch.randn(768, generator=g) if person is None else person
    return IdTokens(torch.randn(5, 768, generator=g), torch.randn(5, 768, generator=g), init)


def _encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _sample(model, positive, negative, steps=STEPS, cfg=7.0, sampler="euler", scheduler="normal"):
    import comfy.sample

    g = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 8, 8, generator=g)
    with torch.inference_mode():
        return comfy.sample.sample(
            model, noise, steps, cfg, sampler, scheduler, positive, negative, torch.zeros(1, 4, 8, 8), seed=1
        )


def _expected_stages(model, steps, scheduler="normal"):
    import comfy.samplers

    from likeness.models.sefi.stages import stage_of_sigma

    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps)[:-1]
    return [int(s) for s in stage_of_sigma(sigmas, sampling.sigmas)]


def _record(model, site):
    """Forward hooks on one site's to_k / to_v: the key and value contexts of every UNet call."""
    from likeness.nodes.patching.sites import attn2_modules

    attn = attn2_modules(model)[site]
    seen = {"k": [], "v": []}
    hooks = [
        attn.to_k.register_forward_hook(lambda m, i, o: seen["k"].append(i[0].detach().float().clone())),
        attn.to_v.register_forward_hook(lambda m, i, o: seen["v"].append(i[0].detach().float().clone())),
    ]
    return seen, hooks


def test_stage_mapping_equals_comfyui_timesteps_for_its_schedulers(sd15):
    import comfy.samplers

    from likeness.models.sefi.stages import stage_of_sigma

    sampling = sd15[0].get_model_object("model_sampling")
    for scheduler in ("normal", "karras", "exponential", "sgm_uniform", "simple", "beta"):
        for steps in (4, 10, 30):
            sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps)[:-1]
            want = (sampling.timestep(sigmas).float() * 5 // 1000).long().clamp(0, 4)
            got = stage_of_sigma(sigmas, sampling.sigmas)
            assert torch.equal(got, want), (scheduler, steps)


def test_key_and_value_contexts_follow_the_stage_inside_the_unet(sd15):
    """Hook test: at each sampling step the V* row's to_k / to_v inputs are that stage's key / value encodings."""
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import COND_KEY, with_id_tokens

    model, clip = sd15
    sclip = with_id_tokens(clip, _tokens(), "V*", 1.0)
    positive = _encode(sclip, "a V*, smiling")
    negative = _encode(clip, "blurry")
    stages_data = positive[0][1][COND_KEY]
    patched, patch = apply_sefi(model)
    seen, hooks = _record(patched, ("input", 7, 0))
    try:
        _sample(patched, positive, negative)
    finally:
        for h in hooks:
            h.remove()
    expected = _expected_stages(model, STEPS)
    assert expected == [4, 3, 2, 1, 0]
    assert len(seen["k"]) == STEPS and all(k.shape == (2, 77, 768) for k in seen["k"])
    neg = negative[0][0][0]
    for step, stage in enumerate(expected):
        k, v = seen["k"][step], seen["v"][step]
        row = [i for i in range(2) if not torch.allclose(k[i], neg, atol=1e-4)]
        assert len(row) == 1, "exactly one row (the V* prompt) must change"
        r = row[0]
        assert torch.allclose(k[r], stages_data.keys[stage], atol=1e-4), f"step {step}: keys of stage {stage}"
        assert torch.allclose(v[r], stages_data.values[stage], atol=1e-4), f"step {step}: values of stage {stage}"
        assert torch.allclose(v[1 - r], neg, atol=1e-4), "the negative prompt keeps its own values"
        assert (k[r] - v[r]).abs().max() > 0.1, "keys and values come from different encodings"
    assert not torch.allclose(seen["k"][0], seen["k"][-1], atol=1e-3)
    assert dict(patch.hits) == {key: STEPS for key in patch.hits} and len(patch.hits) == 16


def test_inputs_are_not_mutated_and_plain_prompts_are_unchanged(sd15):
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import COND_KEY, with_id_tokens

    model, clip = sd15
    options = copy.deepcopy(model.model_options)
    tokenizer, encoder = clip.tokenizer, clip.cond_stage_model
    before = _encode(clip, "a photo of a dog")
    sclip = with_id_tokens(clip, _tokens(), "V*", 1.0)
    patched, _ = apply_sefi(model)
    plain = _encode(sclip, "a photo of a dog")
    assert torch.equal(plain[0][0], before[0][0]) and COND_KEY not in plain[0][1]
    assert clip.tokenizer is tokenizer and clip.cond_stage_model is encoder
    assert model.model_options == options
    assert torch.equal(_encode(clip, "a photo of a dog")[0][0], before[0][0])
    again, none = apply_sefi(patched)
    assert none is None, "a MODEL already patched is not patched twice"
    cloned = sclip.clone()  # e.g. CLIPSetLastLayer clones: the wrappers travel with the clone
    assert COND_KEY in _encode(cloned, "V* portrait")[0][1]
    negative = _encode(clip, "blurry")
    assert torch.equal(_sample(patched, before, negative), _sample(model, before, negative))


def test_weight_zero_is_the_plain_person_prompt(sd15):
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import COND_KEY, with_id_tokens, word_embedding

    model, clip = sd15
    person_vector = word_embedding(clip, "person")
    assert person_vector.shape == (768,)
    zero = with_id_tokens(clip, _tokens(person=person_vector), "V*", 0.0)
    cond = _encode(zero, "a V*, smiling")
    person = _encode(clip, "a person , smiling")[0][0]
    data = cond[0][1][COND_KEY]
    assert torch.allclose(cond[0][0], person, atol=1e-5)
    assert torch.allclose(data.keys, person.expand(5, -1, -1), atol=1e-5)
    assert torch.allclose(data.values, person.expand(5, -1, -1), atol=1e-5)
    patched, _ = apply_sefi(model)
    negative = _encode(clip, "blurry")
    out = _sample(patched, cond, negative)
    ref = _sample(model, _encode(clip, "a person , smiling"), negative)
    assert torch.allclose(out, ref, atol=1e-4)
    full = _encode(with_id_tokens(clip, _tokens(), "V*", 1.0), "a V*, smiling")
    assert not torch.allclose(_sample(patched, full, negative), ref, atol=1e-3)


def test_stacks_with_wplus_and_existing_attn2_replaces_without_mutating_them(sd15, comfy_env, count_site_calls):
    from likeness.models.wplus_adapter.model import load_wplus_adapter
    from likeness.nodes.patching import LoadedWPlusAdapter, apply_wplus_adapter
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import COND_KEY, with_id_tokens
    from likeness.nodes.patching.sites import attn2_modules

    model, clip = sd15
    path = comfy_env.models / "wplus" / "wplus_adapter.bin"
    loaded = LoadedWPlusAdapter.wrap(load_wplus_adapter(path), path.name)
    wplus = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    seen_k = []

    class Foreign:  # an IPAdapter-style replace already on the MODEL
        def __call__(self, q, k, v, extra_options):
            seen_k.append(k.detach().clone())
            from comfy.ldm.modules.attention import optimized_attention

            return optimized_attention(q, k, v, extra_options["n_heads"])

    foreign = Foreign()
    base = model.clone()
    base.set_model_attn2_replace(foreign, "output", 4, 0)
    snapshot = set(base.model_options["transformer_options"]["patches_replace"]["attn2"])
    sclip = with_id_tokens(clip, _tokens(), "V*", 1.0)
    positive, negative = _encode(sclip, "V* on a beach"), _encode(clip, "blurry")
    first, _ = apply_wplus_adapter(base, loaded, wplus, 1.0, 0.0, 1.0)
    both_a, sefi_a = apply_sefi(first)
    second, sefi_b = apply_sefi(base)
    both_b, _ = apply_wplus_adapter(second, loaded, wplus, 1.0, 0.0, 1.0)
    assert set(base.model_options["transformer_options"]["patches_replace"]["attn2"]) == snapshot
    assert base.model_options["transformer_options"]["patches_replace"]["attn2"][("output", 4, 0)] is foreign
    out_a = _sample(both_a, positive, negative, steps=2)
    seen_a = list(seen_k)
    with count_site_calls() as wplus_hits:
        out_b = _sample(both_b, positive, negative, steps=2)
    assert sum(sefi_a.hits.values()) == 32 and sum(sefi_b.hits.values()) == 32 and sum(wplus_hits.values()) == 32
    assert torch.allclose(out_a, out_b, atol=1e-4), "the order of the two nodes does not matter"
    only_wplus = _sample(first, positive, negative, steps=2)
    assert not torch.allclose(out_a, only_wplus, atol=1e-3)
    # the foreign replace, wrapped by W+, received keys projected from the SeFi key contexts
    to_k = attn2_modules(model)[("output", 4, 0)].to_k
    data = positive[0][1][COND_KEY]
    assert len(seen_a) == 2
    for k, stage in zip(seen_a, _expected_stages(model, 2), strict=True):
        with torch.inference_mode():
            want = to_k(data.keys[stage : stage + 1].to(k.dtype))
        assert any(torch.allclose(k[i : i + 1], want, atol=1e-3) for i in range(k.shape[0])), f"stage {stage}"


def test_changed_conditioning_is_not_split_and_is_reported(sd15, caplog):
    import nodes
    from likeness.nodes.patching.sefi import apply_sefi
    from likeness.nodes.patching.sefi_text import with_id_tokens

    model, clip = sd15
    sclip = with_id_tokens(clip, _tokens(), "V*", 1.0)
    positive = _encode(sclip, "V* smiling")
    joined = nodes.ConditioningConcat().concat(positive, _encode(clip, "in a garden"))[0]
    patched, patch = apply_sefi(model)
    negative = _encode(clip, "blurry")
    with caplog.at_level(logging.WARNING):
        out = _sample(patched, joined, negative, steps=1)
    assert "NOT applied" in caplog.text and not patch.hits
    assert torch.equal(out, _sample(model, joined, negative, steps=1))


def test_placeholder_errors_and_two_identities(sd15):
    from likeness.models.errors import LikenessError
    from likeness.nodes.patching.sefi_text import COND_KEY, with_id_tokens

    _, clip = sd15
    one = with_id_tokens(clip, _tokens(0), "V*", 1.0)
    two = with_id_tokens(one, _tokens(1), "W*", 1.0)
    data = _encode(two, "V* and W* shaking hands")[0][1][COND_KEY]
    only_v = _encode(one, "V* and W* shaking hands")[0][1][COND_KEY]
    assert not torch.allclose(data.keys, only_v.keys, atol=1e-3)
    with pytest.raises(LikenessError, match="already carries ID tokens for 'V\\*'"):
        with_id_tokens(one, _tokens(2), "V*", 1.0)
    with pytest.raises(LikenessError, match="cannot be used"):
        with_id_tokens(clip, _tokens(), "two words", 1.0)
    long = " ".join(["word"] * 74) + " V* smiling"
    with pytest.raises(LikenessError, match="77-token"):
        one.tokenize(long)
    wide = _tokens()
    from likeness.models.sefi.tokens import IdTokens

    narrow = IdTokens(wide.keys[:, :512], wide.values[:, :512], wide.init_embedding[:512])
    with pytest.raises(LikenessError, match="512-d but this CLIP's word embeddings are 768-d"):
        with_id_tokens(clip, narrow, "V*", 1.0)
