"""Loss options of the ``loss`` group (docs/kohya.md §4): SNR weights, noise modifications, zero-terminal SNR,
loss types and the composed objective, against hand-computed values and their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from sdlora.config.schema import LossConfig
from sdlora.diffusion.loss import elementwise_loss, huber_c, reduce_per_sample
from sdlora.diffusion.noise import input_perturbation, multires_noise, offset_noise
from sdlora.diffusion.objective import DiffusionObjective, prediction_type_problems
from sdlora.diffusion.schedule import rescale_zero_terminal_snr, scaled_linear_alphas_cumprod, snr
from sdlora.diffusion.weighting import (
    debiased_weight,
    min_snr_weight,
    scale_v_pred_loss_weight,
    v_pred_like_loss_factor,
)

AC = scaled_linear_alphas_cumprod()
SNR = snr(AC)


def at(*timesteps: int) -> torch.Tensor:
    return SNR[list(timesteps)]


# ----------------------------------------------------------------------------------------------------- weights
def test_snr_crosses_one_at_354_and_five_at_147():
    assert SNR[353] > 1 > SNR[354] and SNR[146] > 5 > SNR[147]


@pytest.mark.parametrize(("t", "term"), [(0, 1.00085), (200, 1.327), (500, 3.619), (999, 214.6)])
def test_v_pred_like_loss_factor_is_one_plus_lambda_times_s_plus_one_over_s(t, term):
    assert float(v_pred_like_loss_factor(at(t), 1.0)) == pytest.approx(1 + term, rel=1e-3)
    assert float(v_pred_like_loss_factor(at(t), 0.5)) == pytest.approx(1 + 0.5 * term, rel=1e-3)


def test_min_snr_gamma_forms_for_epsilon_and_v():
    s = at(0, 147, 354, 999)
    eps = min_snr_weight(s, 5.0, v_prediction=False)
    v = min_snr_weight(s, 5.0, v_prediction=True)
    torch.testing.assert_close(eps, torch.minimum(s, torch.tensor(5.0)) / s)
    torch.testing.assert_close(v, torch.minimum(s, torch.tensor(5.0)) / (s + 1))
    assert float(eps[0]) == pytest.approx(5 / 1175.44, rel=1e-4)  # high SNR: γ/SNR
    assert float(eps[3]) == 1.0 and float(v[3]) == pytest.approx(float(s[3] / (s[3] + 1)))
    # zero SNR (zero-terminal-SNR schedule): ε weight is 1, not 0/0; v weight is 0
    zero = torch.zeros(1)
    assert float(min_snr_weight(zero, 5.0, False)) == 1.0 and float(min_snr_weight(zero, 5.0, True)) == 0.0


def test_scale_v_pred_and_debiased_weights():
    s = at(0, 354, 999)
    capped = torch.clamp(s, max=1000)
    torch.testing.assert_close(scale_v_pred_loss_weight(s), capped / (capped + 1))
    torch.testing.assert_close(debiased_weight(s, v_prediction=False), 1 / capped.sqrt())
    torch.testing.assert_close(debiased_weight(s, v_prediction=True), 1 / (capped + 1))
    assert float(debiased_weight(at(0), False)) == pytest.approx(1 / math.sqrt(1000))  # capped at 1000


def test_weights_multiply_in_kohyas_order():
    settings = LossConfig(min_snr_gamma=5.0, v_pred_like_loss=0.3, debiased_estimation=True)
    objective = DiffusionObjective("epsilon", settings)
    t = torch.tensor([10, 400, 900])
    s = SNR[t]
    expected = min_snr_weight(s, 5.0, False) * v_pred_like_loss_factor(s, 0.3) * debiased_weight(s, False)
    torch.testing.assert_close(objective.weights(t), expected)
    v_objective = DiffusionObjective("v_prediction", LossConfig(scale_v_pred_loss_like_noise_pred=True))
    torch.testing.assert_close(v_objective.weights(t), scale_v_pred_loss_weight(s))


# --------------------------------------------------------------------------------------------- zero terminal SNR
def test_zero_terminal_snr_rescale():
    rescaled = rescale_zero_terminal_snr(AC)
    assert float(rescaled[-1]) == 0.0
    assert float(rescaled[0]) == pytest.approx(float(AC[0]), abs=1e-7)
    assert torch.all(rescaled[1:] <= rescaled[:-1])  # still decreasing
    sqrt_ab = AC.double().sqrt()
    expected = ((sqrt_ab - sqrt_ab[-1]) * sqrt_ab[0] / (sqrt_ab[0] - sqrt_ab[-1])) ** 2
    torch.testing.assert_close(rescaled.double(), expected, atol=1e-7, rtol=1e-6)


def test_zero_terminal_snr_is_used_for_noising_targets_and_weights():
    objective = DiffusionObjective("v_prediction", LossConfig(zero_terminal_snr=True, min_snr_gamma=5.0))
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([999, 999])
    noised = objective.noise_with(latents, noise, t)
    torch.testing.assert_close(noised.noisy, noise)  # x_T is pure noise
    torch.testing.assert_close(noised.target, -latents)  # v = √ᾱ ε − √(1−ᾱ) x₀ with ᾱ_T = 0
    assert float(objective.weights(t)[0]) == 0.0  # SNR weights from the rescaled schedule (kohya's table is stale)


# ------------------------------------------------------------------------------------------------------- noise
def test_offset_noise_is_a_per_sample_per_channel_constant():
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    shifted = offset_noise(noise, latents, 0.1, generator=generator)
    shift = shifted - noise
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # constant over H, W
    assert shift[:, :, 0, 0].std() > 0  # differs per sample/channel
    expected = 0.1 * torch.randn(3, 4, 1, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shift[:, :, :1, :1], expected)


def test_adaptive_noise_scale_and_random_strength():
    latents = torch.full((2, 4, 8, 8), 2.0)
    latents[1] = -3.0
    noise = torch.zeros(2, 4, 8, 8)
    gen = torch.Generator().manual_seed(1)
    shifted = offset_noise(noise, latents, 0.1, adaptive_scale=0.05, generator=gen)
    unit = torch.randn(2, 4, 1, 1, generator=torch.Generator().manual_seed(1))
    strength = torch.tensor([0.1 + 0.05 * 2.0, 0.1 + 0.05 * 3.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(shifted[:, :, :1, :1], strength * unit)
    negative = offset_noise(noise, latents, 0.1, adaptive_scale=-1.0, generator=gen)
    assert torch.equal(negative, noise)  # max(0, o + a·|mean|) clamps to zero

    gen = torch.Generator().manual_seed(2)
    random = offset_noise(noise, latents, 0.1, random_strength=True, generator=gen)
    replay = torch.Generator().manual_seed(2)
    factor = torch.rand(1, generator=replay)
    torch.testing.assert_close(random[:, :, :1, :1], 0.1 * factor * torch.randn(2, 4, 1, 1, generator=replay))


def test_multires_noise_follows_the_pyramid_formula():
    noise = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = multires_noise(noise, 6, 0.3, generator=torch.Generator().manual_seed(5))
    assert float(out.std()) == pytest.approx(1.0, abs=1e-5)
    replay, expected = torch.Generator().manual_seed(5), noise.clone()
    for i in range(6):  # r ~ U(2, 4); noise at ⌊32/rⁱ⌋², bilinear up, × 0.3ⁱ; stop at a side of 1
        r = 2 + 2 * float(torch.rand(1, generator=replay))
        side = max(1, int(32 / r**i))
        layer = torch.randn(2, 4, side, side, generator=replay)
        expected += torch.nn.functional.interpolate(layer, size=(32, 32), mode="bilinear") * 0.3**i
        if side == 1:
            break
    torch.testing.assert_close(out, expected / expected.std())


def test_input_perturbation_changes_only_the_noisy_input():
    objective = DiffusionObjective("epsilon", LossConfig(ip_noise_gamma=0.1))
    plain = DiffusionObjective("epsilon")
    latents = torch.randn(2, 4, 8, 8)
    noised = objective.noise(latents, generator=torch.Generator().manual_seed(0))
    reference = plain.noise(latents, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noised.target, reference.target)  # the target keeps ε
    assert torch.equal(noised.timesteps, reference.timesteps)
    assert not torch.allclose(noised.noisy, reference.noisy)
    perturbed = input_perturbation(torch.zeros(1000), 0.1, generator=torch.Generator().manual_seed(0))
    assert float(perturbed.std()) == pytest.approx(0.1, rel=0.1)


# ------------------------------------------------------------------------------------------------ loss types
def test_huber_c_schedules():
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(huber_c("constant", t, AC, 0.1, 2.0), torch.full((3,), 0.2))
    exponential = huber_c("exponential", t, AC, 0.1, 1.0)
    assert float(exponential[0]) == 1.0
    torch.testing.assert_close(exponential, torch.exp(-(-math.log(0.1) / 1000) * t.float()))
    sigma = ((1 - AC[t]) / AC[t]).sqrt()
    torch.testing.assert_close(huber_c("snr", t, AC, 0.1, 5.0), (1 - 0.1) / (1 + sigma) ** 2 + 0.1)  # no scale


@pytest.mark.parametrize("loss_type", ["huber", "smooth_l1"])
def test_huber_losses_are_l2_like_for_small_and_l1_like_for_large_residuals(loss_type):
    c = torch.tensor([0.5])
    target = torch.zeros(1, 1, 1, 1)
    small, large = torch.full((1, 1, 1, 1), 1e-3), torch.full((1, 1, 1, 1), 1e3)
    value_small = float(elementwise_loss(small, target, loss_type, c))
    value_large = float(elementwise_loss(large, target, loss_type, c))
    quadratic = 1e-6 if loss_type == "huber" else 1e-6 / 0.5  # huber ≈ r²; smooth_l1 ≈ r²/c
    linear = 2 * 0.5 * 1e3 if loss_type == "huber" else 2 * 1e3  # huber ≈ 2c|r|; smooth_l1 ≈ 2|r|
    assert value_small == pytest.approx(quadratic, rel=1e-3)
    assert value_large == pytest.approx(linear, rel=1e-3)


def test_l1_l2_and_masked_reduction():
    pred, target = torch.tensor([[[[1.0, -3.0]]]]), torch.zeros(1, 1, 1, 2)
    assert float(reduce_per_sample(elementwise_loss(pred, target, "l2"))) == 5.0
    assert float(reduce_per_sample(elementwise_loss(pred, target, "l1"))) == 2.0
    mask = torch.tensor([[[[1.0, 0.0]]]])
    assert float(reduce_per_sample(elementwise_loss(pred, target, "l2"), mask)) == 0.5  # plain mean, as kohya


def test_objective_loss_composes_type_mask_and_weights():
    settings = LossConfig(type="huber", huber_schedule="constant", huber_c=0.2, min_snr_gamma=5.0)
    objective = DiffusionObjective("epsilon", settings)
    latents = torch.randn(2, 4, 8, 8)
    noised = objective.noise(latents, generator=torch.Generator().manual_seed(0))
    prediction = torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1.0  # top half of the (pixel-space) mask, resized to the latent size
    per_sample = objective.loss(prediction, noised, mask)
    c = torch.full((2,), 0.2)
    element = elementwise_loss(prediction, noised.target, "huber", c)
    latent_mask = torch.zeros(2, 1, 8, 8)
    latent_mask[:, :, :4] = 1.0
    expected = reduce_per_sample(element, latent_mask) * min_snr_weight(SNR[noised.timesteps], 5.0, False)
    torch.testing.assert_close(per_sample, expected)
    assert objective.plain_loss(prediction, noised).shape == (2,)


def test_default_objective_draws_noise_then_timesteps():
    objective = DiffusionObjective("epsilon")
    latents = torch.randn(3, 4, 8, 8)
    noised = objective.noise(latents, generator=torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    noise = torch.randn(3, 4, 8, 8, generator=replay)
    t = torch.randint(0, 1000, (3,), generator=replay)
    assert torch.equal(noised.timesteps, t)
    torch.testing.assert_close(noised.target, noise)


@pytest.mark.parametrize(
    ("settings", "prediction", "fragment"),
    [
        (LossConfig(v_pred_like_loss=0.2), "v_prediction", "loss.v_pred_like_loss is for ε-prediction"),
        (LossConfig(scale_v_pred_loss_like_noise_pred=True), "epsilon", "needs a v-prediction model"),
        (LossConfig(zero_terminal_snr=True, debiased_estimation=True), "epsilon", "loss.debiased_estimation divide"),
    ],
)
def test_prediction_type_guards(settings, prediction, fragment):
    problems = prediction_type_problems(settings, prediction)
    assert len(problems) == 1 and fragment in problems[0]
