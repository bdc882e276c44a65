"""The training objective, composed from the pure functions of this package and configured by the ``loss`` group.

For a batch of clean latents x₀ (docs/kohya.md §4):
  ε ~ N(0, I), then noise offset → multires noise;  t ~ U{min_timestep … max_timestep − 1};
  x_t = √ᾱ_t x₀ + √(1−ᾱ_t)(ε + γ_ip·N(0, I));  target = ε or v (from the unperturbed ε);
  per-sample loss = mean_{C,H,W}(mask · ℓ(prediction, target)) × min-SNR × scale-v-pred × v-pred-like × debiased.
ᾱ comes from the (optionally zero-terminal-SNR) schedule, used by noising, targets *and* SNR weights.
The LightningModule runs the U-Net between :meth:`DiffusionObjective.noise` and :meth:`DiffusionObjective.loss`;
nothing here depends on the model family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdlora.config.schema import LossConfig, LossType
from sdlora.diffusion.loss import elementwise_loss, huber_c, reduce_per_sample
from sdlora.diffusion.noise import input_perturbation, multires_noise, offset_noise
from sdlora.diffusion.prediction import prediction_type_problems  # noqa: F401  (re-exported)
from sdlora.diffusion.schedule import rescale_zero_terminal_snr, scaled_linear_alphas_cumprod, snr
from sdlora.diffusion.targets import V_PREDICTION, add_noise, training_target
from sdlora.diffusion.timesteps import sample_timesteps
from sdlora.diffusion.weighting import (
    debiased_weight,
    min_snr_weight,
    scale_v_pred_loss_weight,
    v_pred_like_loss_factor,
)


@dataclass
class Noised:
    """What the U-Net sees and must predict for one batch."""

    noisy: torch.Tensor  # x_t [B, C, h, w]
    timesteps: torch.Tensor  # t [B]
    target: torch.Tensor  # ε or v [B, C, h, w]


class DiffusionObjective:
    def __init__(self, prediction_type: str, settings: LossConfig | None = None) -> None:
        self.prediction_type = prediction_type
        self.settings = settings if settings is not None else LossConfig()
        alphas_cumprod = scaled_linear_alphas_cumprod()  # [T]
        if self.settings.zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod
        self.snr = snr(alphas_cumprod)  # [T]; inf at t=0 never happens (ᾱ₀ < 1)

    @property
    def v_prediction(self) -> bool:
        return self.prediction_type == V_PREDICTION

    # ------------------------------------------------------------------------------------------------ noise
    def noise(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> Noised:
        """Draw ε (with offset/multires), t and the input perturbation from ``generator``; build x_t and the target."""
        s = self.settings
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        if s.noise_offset:
            noise = offset_noise(
                noise, latents, s.noise_offset, adaptive_scale=s.adaptive_noise_scale,
                random_strength=s.noise_offset_random_strength, generator=generator,
            )  # fmt: skip
        if s.multires_noise_iterations:
            noise = multires_noise(noise, s.multires_noise_iterations, s.multires_noise_discount, generator=generator)
        timesteps = sample_timesteps(
            latents.shape[0], s.min_timestep, s.max_timestep, generator=generator, device=latents.device
        )  # [B]
        noisy_input = noise
        if s.ip_noise_gamma:
            noisy_input = input_perturbation(
                noise, s.ip_noise_gamma, random_strength=s.ip_noise_gamma_random_strength, generator=generator
            )
        return self.noise_with(latents, noise, timesteps, noisy_input=noisy_input)

    def noise_with(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        noisy_input: torch.Tensor | None = None,
    ) -> Noised:
        """x_t (from ``noisy_input``, default ε) and the target (from ε) for given ε and t; deterministic."""
        source = noise if noisy_input is None else noisy_input
        noisy = add_noise(latents, source, timesteps, self.alphas_cumprod)
        target = training_target(self.prediction_type, latents, noise, timesteps, self.alphas_cumprod)
        return Noised(noisy, timesteps, target)

    # ------------------------------------------------------------------------------------------------- loss
    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Product of the enabled SNR weights per sample [B], in kohya's order."""
        s = self.settings
        snr_t = self.snr.to(timesteps.device)[timesteps].float()  # [B]
        weight = torch.ones_like(snr_t)
        if s.min_snr_gamma:
            weight = weight * min_snr_weight(snr_t, s.min_snr_gamma, self.v_prediction)
        if s.scale_v_pred_loss_like_noise_pred:
            weight = weight * scale_v_pred_loss_weight(snr_t)
        if s.v_pred_like_loss:
            weight = weight * v_pred_like_loss_factor(snr_t, s.v_pred_like_loss)
        if s.debiased_estimation:
            weight = weight * debiased_weight(snr_t, self.v_prediction)
        return weight

    def loss(self, prediction: torch.Tensor, noised: Noised, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss [B] (float32): loss type, ``mask`` ([B, 1, H, W] in pixels, or None), SNR weights."""
        s = self.settings
        c = None
        if s.type in (LossType.huber, LossType.smooth_l1):
            c = huber_c(s.huber_schedule, noised.timesteps, self.alphas_cumprod, s.huber_c, s.huber_scale)
        elementwise = elementwise_loss(prediction, noised.target, s.type, c)  # [B, C, h, w]
        if mask is not None:
            mask = F.interpolate(mask.to(elementwise), size=elementwise.shape[2:], mode="area")
        return reduce_per_sample(elementwise, mask) * self.weights(noised.timesteps)

    def plain_loss(self, prediction: torch.Tensor, noised: Noised) -> torch.Tensor:
        """Unweighted per-sample MSE [B]: the validation loss, comparable across runs whatever their loss options."""
        return reduce_per_sample(elementwise_loss(prediction, noised.target, LossType.l2))
