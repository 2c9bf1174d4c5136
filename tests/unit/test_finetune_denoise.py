"""models.finetune.denoise: SD1.x schedule, sigma sampling, masked MSE and the epsilon loss."""

from __future__ import annotations

import pytest
import torch

from likeness.models.finetune import (
    SD15_SCHEDULE,
    VPSchedule,
    add_noise,
    eps_from_denoised,
    eps_loss,
    masked_mse,
    sample_sigmas,
    sample_timesteps,
    sigma_to_timestep,
    timestep_to_sigma,
)


def test_sd15_schedule_matches_the_published_sigma_range():
    s = SD15_SCHEDULE.sigmas
    assert s.shape == (1000,) and s.dtype == torch.float32
    # t = 0: alpha_bar = 1 - beta_0, so sigma = sqrt(beta_0 / (1 - beta_0)); sigma_max as samplers report it
    assert s[0].item() == pytest.approx((0.00085 / 0.99915) ** 0.5, rel=1e-6)
    assert s[-1].item() == pytest.approx(14.6146, abs=1e-4)
    assert bool((s[1:] > s[:-1]).all())
    a = SD15_SCHEDULE.alphas_cumprod
    assert a.dtype == torch.float64 and a[0].item() == pytest.approx(1 - 0.00085)


def test_timesteps_and_sigmas_round_trip_exactly():
    t = torch.arange(0, 1000, 37)
    assert torch.equal(sigma_to_timestep(timestep_to_sigma(t)), t)
    assert sigma_to_timestep(torch.tensor(1.0)).shape == ()
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        timestep_to_sigma(1000)


def test_sampled_sigmas_are_schedule_values_and_seeded():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = sample_sigmas(64, g1), sample_sigmas(64, g2)
    assert torch.equal(a, b) and a.shape == (64,)
    assert torch.isin(a, SD15_SCHEDULE.sigmas).all()
    t = sample_timesteps(2000, torch.Generator().manual_seed(0), t_range=(10, 20))
    assert int(t.min()) == 10 and int(t.max()) == 20
    with pytest.raises(ValueError, match="t_range"):
        sample_timesteps(1, torch.Generator(), t_range=(5, 1000))
    small = VPSchedule(steps=10)
    assert small.sigmas.shape == (10,)


def test_masked_mse_is_the_mean_inside_the_mask():
    pred = torch.zeros(2, 4, 3, 3)
    target = torch.zeros(2, 4, 3, 3)
    target[0, :, 0, 0] = 2.0  # inside the mask: error 4 on 4 channels
    target[1, :, 2, 2] = 100.0  # outside the mask: ignored
    mask = torch.zeros(2, 1, 3, 3)
    mask[0, 0, 0, 0] = 1.0
    mask[1, 0, 0, :] = 1.0
    # 4 masked positions x 4 channels = 16 elements, 4 of them with error 4
    assert masked_mse(pred, target, mask).item() == pytest.approx(16.0 / 16.0)
    assert masked_mse(pred, target).item() == pytest.approx((4 * 4 + 4 * 10000) / 72)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_gradient_of_the_masked_loss_is_zero_outside_the_mask():
    pred = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randn(2, 4, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.6).float()
    masked_mse(pred, target, mask).backward()
    outside = (mask == 0).expand_as(pred)
    assert pred.grad[outside].abs().max().item() == 0.0
    assert pred.grad[~outside].abs().min().item() > 0.0
    empty = torch.randn(1, 4, 2, 2, requires_grad=True)
    masked_mse(empty, torch.zeros_like(empty), torch.zeros(1, 1, 2, 2)).backward()
    assert torch.equal(empty.grad, torch.zeros_like(empty))


def test_noise_and_eps_conventions_are_inverse():
    x0 = torch.randn(3, 4, 5, 5)
    eps = torch.randn_like(x0)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    x_t = add_noise(x0, eps, sigma)
    assert torch.allclose(x_t[2], x0[2] + 10.0 * eps[2])
    assert torch.allclose(eps_from_denoised(x_t, x0, sigma), eps, atol=1e-5)


def test_eps_loss_is_zero_for_an_oracle_and_passes_cond_through():
    x0 = torch.randn(2, 4, 6, 6)
    seen = {}

    def oracle(x_t, sigma, **cond):
        seen.update(cond)
        return x0  # knows the clean latent exactly -> eps_hat == eps

    loss, info = eps_loss(oracle, x0, torch.Generator().manual_seed(1), c_crossattn="ctx")
    assert loss.item() == pytest.approx(0.0, abs=1e-8) and seen == {"c_crossattn": "ctx"}
    assert set(info) == {"x_t", "sigma", "noise", "eps_pred"}

    def blind(x_t, sigma, **cond):
        return x_t  # predicts zero noise -> loss = mean(eps^2) inside the mask

    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, :3] = 1
    loss, info = eps_loss(blind, x0, torch.Generator().manual_seed(1), mask=mask)
    expected = (info["noise"][:, :, :3] ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # same generator seed -> same draw
    _, again = eps_loss(blind, x0, torch.Generator().manual_seed(1), mask=mask)
    assert torch.equal(again["noise"], info["noise"]) and torch.equal(again["sigma"], info["sigma"])
