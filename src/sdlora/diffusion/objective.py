"""The training objective, composed from the pure functions of this package and configured by the ``loss`` group.

For a batch of clean latents x₀:  ε ~ N(0, I);  t ~ U{min_timestep … max_timestep − 1};
x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε;  target = ε or v;  per-sample loss = mean_{C,H,W}(prediction − target)² in float32.
The LightningModule runs the U-Net between :meth:`DiffusionObjective.noise` and :meth:`DiffusionObjective.loss`;
nothing here depends on the model family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdlora.diffusion.loss import per_sample_mse
from sdlora.diffusion.schedule import scaled_linear_alphas_cumprod
from sdlora.diffusion.targets import add_noise, training_target
from sdlora.diffusion.timesteps import sample_timesteps


@dataclass
class Noised:
    """What the U-Net sees and must predict for one batch."""

    noisy: torch.Tensor  # x_t [B, C, h, w]
    timesteps: torch.Tensor  # t [B]
    target: torch.Tensor  # ε or v [B, C, h, w]


class DiffusionObjective:
    def __init__(self, prediction_type: str, min_timestep: int = 0, max_timestep: int = 1000) -> None:
        self.prediction_type = prediction_type
        self.min_timestep, self.max_timestep = min_timestep, max_timestep
        self.alphas_cumprod = scaled_linear_alphas_cumprod()  # [T]

    def noise(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> Noised:
        """Draw ε and t for every sample (from ``generator``) and build x_t and the target."""
        device = latents.device
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        timesteps = sample_timesteps(
            latents.shape[0], self.min_timestep, self.max_timestep, generator=generator, device=device
        )  # [B]
        return self.noise_with(latents, noise, timesteps)

    def noise_with(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> Noised:
        """x_t and the target for given ε and t (deterministic; validation uses fixed ones)."""
        noisy = add_noise(latents, noise, timesteps, self.alphas_cumprod)
        target = training_target(self.prediction_type, latents, noise, timesteps, self.alphas_cumprod)
        return Noised(noisy, timesteps, target)

    def loss(self, prediction: torch.Tensor, noised: Noised, batch: dict) -> torch.Tensor:
        """Per-sample loss [B] (float32)."""
        return per_sample_mse(prediction, noised.target)
