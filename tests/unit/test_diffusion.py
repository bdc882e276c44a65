"""Diffusion maths (docs/kohya.md §4.1): the DDPM schedule, timestep sampling, noising, targets and the loss.

The schedule, ``add_noise`` and ``velocity`` are compared with diffusers' ``DDPMScheduler`` configured as kohya's
(scaled_linear, β 0.00085 → 0.012, T = 1000); the rest against hand-computed values.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from sdlora.diffusion.loss import per_sample_mse, weighted_mean
from sdlora.diffusion.schedule import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS, scaled_linear_alphas_cumprod, snr
from sdlora.diffusion.targets import EPSILON, V_PREDICTION, add_noise, training_target, velocity
from sdlora.diffusion.timesteps import sample_timesteps


@pytest.fixture(scope="module")
def ddpm() -> DDPMScheduler:
    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000, clip_sample=False
    )


@pytest.fixture(scope="module")
def alphas_cumprod() -> torch.Tensor:
    return scaled_linear_alphas_cumprod()


def _batch(seed: int = 0, shape=(6, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


# --- schedule ---------------------------------------------------------------------------------------------------------


def test_defaults_are_kohyas_schedule():
    assert (BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS) == (0.00085, 0.012, 1000)


def test_alphas_cumprod_matches_diffusers_ddpm(ddpm, alphas_cumprod):
    assert alphas_cumprod.shape == (1000,)
    assert alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(alphas_cumprod, ddpm.alphas_cumprod, rtol=0, atol=0)


def test_alphas_cumprod_against_the_formula_in_float64(alphas_cumprod):
    # β_t = (√β_start + t/(T−1)·(√β_end − √β_start))², ᾱ_t = Π_{s≤t} (1 − β_s)
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    expected, prod = [], 1.0
    for t in range(1000):
        beta = (lo + t / 999 * (hi - lo)) ** 2
        prod *= 1.0 - beta
        expected.append(prod)
    torch.testing.assert_close(alphas_cumprod.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0)


def test_reference_numbers(alphas_cumprod):
    assert alphas_cumprod[0].item() == pytest.approx(1 - 0.00085, abs=1e-7)  # ᾱ₀ = 1 − β₀ = 0.99915
    assert alphas_cumprod[999].item() == pytest.approx(0.00466, abs=5e-6)
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())  # strictly decreasing


def test_snr_reference_numbers(alphas_cumprod):
    s = snr(alphas_cumprod)
    torch.testing.assert_close(s, alphas_cumprod / (1 - alphas_cumprod))
    assert s[0].item() == pytest.approx(0.99915 / 0.00085, rel=1e-4)  # ≈ 1175
    assert s[999].item() == pytest.approx(0.0047, abs=1e-4)
    assert int(torch.nonzero(s < 1)[0]) == 354  # first t with SNR < 1
    assert int(torch.nonzero(s < 5)[0]) == 147  # first t with SNR < 5
    assert s[353] >= 1 and s[146] >= 5


def test_custom_schedule_length():
    a = scaled_linear_alphas_cumprod(0.0001, 0.02, 10)
    betas = torch.linspace(0.0001**0.5, 0.02**0.5, 10) ** 2
    assert a.shape == (10,)
    torch.testing.assert_close(a, torch.cumprod(1 - betas, 0))


# --- timesteps --------------------------------------------------------------------------------------------------------


def test_timesteps_cover_the_half_open_range():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(4000, 10, 14, generator=g)
    assert t.shape == (4000,) and t.dtype == torch.long
    assert set(t.tolist()) == {10, 11, 12, 13}  # 14 (the max) is never drawn
    counts = torch.bincount(t - 10, minlength=4)
    assert int(counts.min()) > 850 and int(counts.max()) < 1150  # ≈ 1000 each: uniform


def test_timesteps_default_range_stays_in_0_999():
    t = sample_timesteps(5000, 0, 1000, generator=torch.Generator().manual_seed(1))
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    assert int(t.min()) < 10 and int(t.max()) > 990  # the whole range is reached
    assert 450 < t.float().mean().item() < 550


@pytest.mark.parametrize("value", [0, 500, 999])
def test_timesteps_constant_when_min_equals_max(value):
    t = sample_timesteps(5, value, value, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long
    assert t.tolist() == [value] * 5


def test_timesteps_reproducible_with_a_generator():
    a = sample_timesteps(32, 0, 1000, generator=torch.Generator().manual_seed(123))
    b = sample_timesteps(32, 0, 1000, generator=torch.Generator().manual_seed(123))
    c = sample_timesteps(32, 0, 1000, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_timesteps_same_as_torch_randint_with_that_generator():
    expected = torch.randint(200, 800, (16,), generator=torch.Generator().manual_seed(7))
    got = sample_timesteps(16, 200, 800, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, expected)


# --- noising and targets ----------------------------------------------------------------------------------------------


def test_add_noise_matches_diffusers(ddpm, alphas_cumprod):
    x0, noise = _batch(0)
    t = torch.tensor([0, 1, 147, 354, 500, 999])
    ours = add_noise(x0, noise, t, alphas_cumprod)
    torch.testing.assert_close(ours, ddpm.add_noise(x0, noise, t), rtol=1e-6, atol=1e-6)


def test_velocity_matches_diffusers(ddpm, alphas_cumprod):
    x0, noise = _batch(1)
    t = torch.tensor([999, 0, 10, 250, 354, 750])
    ours = velocity(x0, noise, t, alphas_cumprod)
    torch.testing.assert_close(ours, ddpm.get_velocity(x0, noise, t), rtol=1e-6, atol=1e-6)


def test_add_noise_and_velocity_by_hand():
    alphas_cumprod = torch.tensor([1.0, 0.64, 0.25, 0.0])  # √ᾱ: 1, 0.8, 0.5, 0 · √(1−ᾱ): 0, 0.6, ≈0.866, 1
    x0 = torch.full((4, 1, 2, 2), 2.0)
    noise = torch.full((4, 1, 2, 2), -1.0)
    t = torch.tensor([0, 1, 2, 3])
    xt = add_noise(x0, noise, t, alphas_cumprod)
    v = velocity(x0, noise, t, alphas_cumprod)
    s75 = math.sqrt(0.75)
    expected_xt = [2.0, 0.8 * 2 - 0.6, 0.5 * 2 - s75, -1.0]
    expected_v = [-1.0, -0.8 - 0.6 * 2, -0.5 - s75 * 2, -2.0]
    for b in range(4):
        torch.testing.assert_close(xt[b], torch.full((1, 2, 2), expected_xt[b]))
        torch.testing.assert_close(v[b], torch.full((1, 2, 2), expected_v[b]))


def test_coefficients_are_per_sample(alphas_cumprod):
    x0, noise = _batch(2, shape=(3, 4, 8, 8))
    t = torch.tensor([5, 600, 999])
    xt = add_noise(x0, noise, t, alphas_cumprod)
    for b in range(3):
        single = add_noise(x0[b : b + 1], noise[b : b + 1], t[b : b + 1], alphas_cumprod)
        torch.testing.assert_close(xt[b : b + 1], single)


def test_velocity_identities_recover_x0_and_noise(alphas_cumprod):
    # x₀ = √ᾱ·x_t − √(1−ᾱ)·v and ε = √(1−ᾱ)·x_t + √ᾱ·v
    x0, noise = _batch(3)
    t = torch.tensor([3, 100, 354, 600, 900, 999])
    xt, v = add_noise(x0, noise, t, alphas_cumprod), velocity(x0, noise, t, alphas_cumprod)
    a = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(a.sqrt() * xt - (1 - a).sqrt() * v, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((1 - a).sqrt() * xt + a.sqrt() * v, noise, rtol=1e-5, atol=1e-5)


def test_noising_keeps_dtype_and_works_on_other_ranks(alphas_cumprod):
    x0, noise = _batch(4, shape=(2, 5, 3))  # [B, N, D]
    t = torch.tensor([10, 900])
    xt = add_noise(x0.bfloat16(), noise.bfloat16(), t, alphas_cumprod)
    assert xt.dtype == torch.bfloat16 and xt.shape == (2, 5, 3)
    expected = add_noise(x0, noise, t, alphas_cumprod)
    torch.testing.assert_close(xt.float(), expected, rtol=2e-2, atol=2e-2)


def test_training_target(alphas_cumprod):
    x0, noise = _batch(5)
    t = torch.tensor([0, 1, 2, 3, 4, 5])
    assert training_target(EPSILON, x0, noise, t, alphas_cumprod) is noise
    torch.testing.assert_close(
        training_target(V_PREDICTION, x0, noise, t, alphas_cumprod), velocity(x0, noise, t, alphas_cumprod)
    )
    assert (EPSILON, V_PREDICTION) == ("epsilon", "v_prediction")  # diffusers' prediction_type names
    with pytest.raises(ValueError, match="sample"):
        training_target("sample", x0, noise, t, alphas_cumprod)


# --- loss -------------------------------------------------------------------------------------------------------------


def test_per_sample_mse_by_hand():
    pred = torch.zeros(3, 2, 2, 2)
    target = torch.stack([torch.full((2, 2, 2), c) for c in (1.0, 2.0, -3.0)])
    loss = per_sample_mse(pred, target)
    assert loss.shape == (3,) and loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor([1.0, 4.0, 9.0]))
    # a single differing element: mean over C·H·W = 8 elements
    target = torch.zeros(1, 2, 2, 2)
    target[0, 1, 0, 1] = 4.0
    torch.testing.assert_close(per_sample_mse(pred[:1], target), torch.tensor([16.0 / 8]))


def test_per_sample_mse_is_float32_for_half_inputs():
    x0, noise = _batch(6)
    loss = per_sample_mse(x0.bfloat16(), noise.half())
    assert loss.dtype == torch.float32 and loss.shape == (6,)
    expected = ((x0.bfloat16().float() - noise.half().float()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected)


def test_per_sample_mse_matches_the_batch_mse_when_averaged():
    x0, noise = _batch(7)
    torch.testing.assert_close(per_sample_mse(x0, noise).mean(), torch.nn.functional.mse_loss(x0, noise))


def test_weighted_mean_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64)  # two regularisation images, prior weight 0.5
    out = weighted_mean(losses, weights)
    assert out.dtype == torch.float32 and out.ndim == 0
    assert out.item() == pytest.approx((1 + 2 + 1.5 + 2) / 4)
    assert weighted_mean(losses, torch.ones(4)).item() == pytest.approx(2.5)


def test_weighted_mean_gradient():
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    weighted_mean(losses, torch.tensor([1.0, 3.0])).backward()
    torch.testing.assert_close(losses.grad, torch.tensor([0.5, 1.5]))
