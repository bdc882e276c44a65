"""Forward noising and the U-Net's regression target (docs/kohya.md §4.1).

With ᾱ_t from :mod:`sdlora.diffusion.schedule`:
  x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε                     (noisy latents)
  ε-prediction target:  ε
  v-prediction target:  v = √ᾱ_t · ε − √(1 − ᾱ_t) · x₀   [kohya: --v_parameterization]
"""

from __future__ import annotations

import torch

from sdlora.diffusion.prediction import V_PREDICTION

EPSILON = "epsilon"


def _coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
    """√ᾱ_t and √(1 − ᾱ_t) gathered per sample and shaped [B, 1, 1, 1] to broadcast over ``like``."""
    a = alphas_cumprod.to(device=like.device, dtype=like.dtype)[timesteps]  # [B]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return a.sqrt().reshape(shape), (1.0 - a).sqrt().reshape(shape)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (the same as diffusers' ``DDPMScheduler.add_noise``)."""
    sqrt_a, sqrt_1ma = _coefficients(alphas_cumprod, timesteps, x0)
    return sqrt_a * x0 + sqrt_1ma * noise


def velocity(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ (diffusers' ``get_velocity``)."""
    sqrt_a, sqrt_1ma = _coefficients(alphas_cumprod, timesteps, x0)
    return sqrt_a * noise - sqrt_1ma * x0


def training_target(
    prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """What the U-Net must predict: ε for ``"epsilon"`` models, v for ``"v_prediction"`` models."""
    if prediction_type == EPSILON:
        return noise
    if prediction_type == V_PREDICTION:
        return velocity(x0, noise, timesteps, alphas_cumprod)
    raise ValueError(f"unknown prediction type {prediction_type!r} (expected {EPSILON!r} or {V_PREDICTION!r})")
