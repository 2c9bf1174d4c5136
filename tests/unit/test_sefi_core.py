"""SeFi-IDE core without ComfyUI: stages, ID tokens, placeholder slots, attention loss, context swap, photo crop."""

from __future__ import annotations

import pytest
import torch

from likeness.models.errors import LikenessError
from likeness.models.finetune.denoise import SD15_SCHEDULE
from likeness.models.sefi.attention import (
    SD15_LOSS_SITES,
    AttentionCapture,
    attend,
    attention_mass_inside,
    attention_probs,
    facewise_attention_loss,
)
from likeness.models.sefi.contexts import PromptStages, swap_contexts
from likeness.models.sefi.photo import face_square, prepare_photo
from likeness.models.sefi.prompt import (
    check_placeholder,
    count_placeholder,
    find_spans,
    isolate_placeholder,
    replace_spans,
    substitute,
)
from likeness.models.sefi.stages import stage_of_sigma, stage_of_timestep, stage_timesteps
from likeness.models.sefi.tokens import IdTokens


def sd15_sigmas() -> torch.Tensor:
    """SD1.5's discrete schedule, float32 like ComfyUI's ``model_sampling.sigmas``."""
    return SD15_SCHEDULE.sigmas


# ComfyUI 0.33.0, SD1.5 ModelSamplingDiscrete, calculate_sigmas(ms, scheduler, 10)[:-1], rounded to 1e-4,
# and ms.timestep() of each (read from ComfyUI in-process; the comfyui tier re-checks them live).
KNOWN_SCHEDULES = {
    "normal": (
        [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.625, 0.3687, 0.0292],
        [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    ),
    "karras": (
        [14.6146, 9.1029, 5.4784, 3.1686, 1.7494, 0.9141, 0.4469, 0.2014, 0.0819, 0.0292],
        [999, 916, 815, 687, 523, 327, 146, 41, 7, 0],
    ),
    "simple": (
        [14.6146, 8.3028, 5.0878, 3.3211, 2.2765, 1.6129, 1.1606, 0.8299, 0.5693, 0.3417],
        [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
    ),
}


def test_stage_of_timestep_cuts_1000_steps_into_five_with_4_the_noisy_end():
    assert [stage_of_timestep(t) for t in (0, 199, 200, 399, 400, 799, 800, 999)] == [0, 0, 1, 1, 2, 3, 4, 4]
    t = torch.arange(1000)
    stages = stage_of_timestep(t)
    assert stages.dtype == torch.long and torch.bincount(stages).tolist() == [200] * 5
    assert list(stage_timesteps(4)) == list(range(800, 1000))
    with pytest.raises(ValueError):
        stage_timesteps(5)


def test_stage_of_sigma_round_trips_every_training_timestep():
    sigmas = sd15_sigmas()
    assert sigmas[0].item() == pytest.approx(0.0291672, abs=1e-6) and sigmas[-1].item() == pytest.approx(14.61464, 1e-5)
    stages = stage_of_sigma(sigmas, sigmas)
    assert torch.equal(stages, torch.arange(1000) * 5 // 1000)


@pytest.mark.parametrize("scheduler", sorted(KNOWN_SCHEDULES))
def test_stage_of_sigma_matches_comfyui_schedules(scheduler):
    values, timesteps = KNOWN_SCHEDULES[scheduler]
    sigmas = sd15_sigmas()
    got = [stage_of_sigma(s, sigmas) for s in values]
    assert got == [t * 5 // 1000 for t in timesteps]
    assert got[0] == 4 and got == sorted(got, reverse=True)


def test_stage_of_sigma_boundaries_and_bad_table():
    sigmas = sd15_sigmas()
    assert stage_of_sigma(float(sigmas[800]) * 1.0001, sigmas) == 4
    assert stage_of_sigma(float(sigmas[799]), sigmas) == 3
    assert stage_of_sigma(100.0, sigmas) == 4 and stage_of_sigma(1e-4, sigmas) == 0
    with pytest.raises(ValueError, match=r"\[1000\]"):
        stage_of_sigma(1.0, sigmas[:10])


def _tokens(dim=8, seed=0) -> IdTokens:
    g = torch.Generator().manual_seed(seed)
    return IdTokens(torch.randn(5, dim, generator=g), torch.randn(5, dim, generator=g), torch.randn(dim, generator=g))


def test_id_tokens_initial_blend_and_validation():
    person = torch.arange(4.0)
    init = IdTokens.initial(person, "person", note="x")
    assert init.keys.shape == (5, 4) and torch.equal(init.keys[3], person) and init.info == {"note": "x"}
    tok = _tokens()
    assert torch.allclose(tok.blended(0.0).keys, tok.init_embedding.expand(5, -1))
    assert torch.allclose(tok.blended(1.0).values, tok.values)
    half = tok.blended(0.5)
    assert torch.allclose(half.keys[2], (tok.keys[2] + tok.init_embedding) / 2)
    assert torch.allclose(tok.base_vector(), tok.values.mean(0))
    k, v = tok.pair(4)
    assert torch.equal(k, tok.keys[4]) and torch.equal(v, tok.values[4])
    with pytest.raises(LikenessError, match=r"'keys' must be \[5, D\] with D = 8.*\(4, 8\)"):
        IdTokens(torch.zeros(4, 8), torch.zeros(5, 8), torch.zeros(8))
    with pytest.raises(LikenessError, match="NaN"):
        IdTokens(torch.full((5, 8), float("nan")), torch.zeros(5, 8), torch.zeros(8))
    with pytest.raises(LikenessError, match="finite"):
        tok.blended(float("inf"))
    back = IdTokens.from_tensors(tok.tensors(), "person", {})
    assert torch.equal(back.keys, tok.keys) and torch.equal(back.init_embedding, tok.init_embedding)
    with pytest.raises(LikenessError, match=r"\['values'\] missing"):
        IdTokens.from_tensors({"keys": tok.keys, "init_embedding": tok.init_embedding}, "person", {})


def test_placeholder_is_isolated_counted_and_checked():
    assert isolate_placeholder("a V*, smiling (V*:1.2) XV*Y V*s", "V*") == "a  V* , smiling ( V* :1.2) XV*Y V*s"
    assert count_placeholder("a V*, smiling (V*:1.2) XV*Y", "V*") == 2
    assert check_placeholder(" sks ") == "sks"
    for bad in ("", "two words", "(x)", "a:b"):
        with pytest.raises(LikenessError, match="cannot be used"):
            check_placeholder(bad)


def test_spans_are_replaced_by_one_slot_keeping_section_length():
    assert find_spans([1, 7, 8, 2, 7, 8, 7], [7, 8]) == [(1, 3), (4, 6)]
    marker = torch.zeros(3)
    sections = [
        [(49406, 1.0, 0), (10, 1.0, 1), (7, 1.2, 2), (8, 1.2, 2), (11, 1.0, 3), (49407, 1.0, 0), (49407, 1.0, 0)]
    ]
    out, found = replace_spans(sections, [7, 8], marker)
    assert found == 1 and len(out[0]) == len(sections[0])
    assert out[0][2][0] is marker and out[0][2][1:] == (1.2, 2)
    assert [e[0] for e in out[0][3:]] == [11, 49407, 49407, 49407]
    assert sections[0][2][0] == 7, "input sections must not be modified"
    vec = torch.ones(3)
    swapped = substitute(out, [marker], {0: vec})
    assert swapped[0][2][0] is vec and out[0][2][0] is marker
    pairs = [[(1, 1.0), (7, 1.0), (8, 1.0)], [(7, 1.0)]]
    out2, found2 = replace_spans(pairs, [7, 8], marker)
    assert found2 == 1 and out2[1] == pairs[1] and out2[0][2] == (8, 1.0)  # padding repeats the last entry


def test_attention_probs_attend_and_the_facewise_loss():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 16, generator=g) for _ in range(3))
    probs = attention_probs(q, k, heads=4)
    assert probs.shape == (2, 4, 6, 6) and torch.allclose(probs.sum(-1), torch.ones(2, 4, 6))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.view(2, 6, 4, 4).transpose(1, 2), k.view(2, 6, 4, 4).transpose(1, 2), v.view(2, 6, 4, 4).transpose(1, 2)
    )
    assert torch.allclose(attend(probs, v), ref.transpose(1, 2).reshape(2, 6, 16), atol=1e-5)
    assert facewise_attention_loss(probs, probs).item() == 0.0
    one_hot = torch.zeros_like(probs)
    one_hot[..., 0] = 1
    expected = ((probs - one_hot) ** 2).sum(-1).mean()
    assert torch.allclose(facewise_attention_loss(probs, one_hot), expected)
    mask = torch.tensor([1, 1, 0, 0, 0, 0.0])
    mass = attention_mass_inside(probs, 2, mask)
    col = probs[..., 2]
    assert torch.allclose(mass, (col[..., :2].sum(-1) / col.sum(-1)).mean())


def test_capture_reference_is_detached_and_missing_sites_are_reported():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 8, generator=g, requires_grad=True)
    k = torch.randn(1, 3, 8, generator=g, requires_grad=True)
    capture = AttentionCapture(torch.zeros(1, 3, 5), SD15_LOSS_SITES[:2])
    assert capture.wants(("input", 7, 0)) and not capture.wants(("output", 3, 0))
    capture.observe(("input", 7, 0), q, k, torch.randn(1, 3, 8, generator=g), heads=2)
    with pytest.raises(ValueError, match=r"never reported.*\('input', 8, 0\)"):
        capture.loss()
    capture.observe(("input", 8, 0), q, k, torch.randn(1, 3, 8, generator=g), heads=2)
    capture.loss().backward()
    assert k.grad is not None and k.grad.abs().sum() > 0


def _stages(length=4, width=3, offset=0.0) -> PromptStages:
    base = torch.full((1, length, width), offset)
    keys = torch.stack([torch.full((length, width), offset + 10 + s) for s in range(5)])
    values = torch.stack([torch.full((length, width), offset + 20 + s) for s in range(5)])
    return PromptStages(base, keys, values)


def test_swap_contexts_replaces_only_v_star_chunks_with_the_stage_keys_and_values():
    data = _stages()
    context = torch.cat([torch.full((2, 8, 3), -1.0), torch.zeros(2, 8, 3)])  # uncond chunk, then V* chunk (tiled x2)
    k, v = swap_contexts(context, context, [None, data], stage=3)
    assert torch.equal(k[:2], context[:2]) and torch.equal(v[:2], context[:2])
    assert torch.all(k[2:] == 13) and torch.all(v[2:] == 23) and k.shape == context.shape
    same = swap_contexts(context, context, [None, None], 0)
    assert same[0] is context and same[1] is context
    assert data.matches(torch.zeros(2, 8, 3)) and not data.matches(torch.zeros(1, 6, 3))
    assert not data.matches(torch.ones(1, 4, 3))
    with pytest.raises(ValueError):
        PromptStages(torch.zeros(1, 4, 3), torch.zeros(4, 4, 3), torch.zeros(5, 4, 3))


def test_photo_crop_policies():
    image = torch.rand(100, 160, 3)
    out, box = prepare_photo(image, "center", 64)
    assert out.shape == (64, 64, 3) and box == (30, 0, 100, 100)
    _, box = prepare_photo(image, "face", 32, face_bbox=(130, 10, 150, 40), margin=2.0)
    assert box == (100, 0, 60, 60)  # 2 x 30 px, shifted inside the image
    _, box = prepare_photo(image, "stretch", 32)
    assert box == (0, 0, 160, 100)
    assert face_square((0, 0, 500, 500), 100, 160) == (60, 0, 100)  # shrunk to fit, then shifted inside
    with pytest.raises(LikenessError, match="connect a face analyzer"):
        prepare_photo(image, "face", 64)
    with pytest.raises(LikenessError, match="multiple of 8"):
        prepare_photo(image, "center", 60)
    with pytest.raises(LikenessError, match="unknown face crop policy"):
        prepare_photo(image, "zoom", 64)
