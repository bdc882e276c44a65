"""The DDPM noise schedule every SD family is trained with (docs/kohya.md §4.1).

β_t follows the "scaled_linear" rule: √β linear from √0.00085 to √0.012 over T = 1000 steps; ᾱ_t = Π_{s≤t}(1 − β_s).
Useful numbers: ᾱ₀ = 0.99915 (SNR ≈ 1175), ᾱ₉₉₉ = 0.00466; SNR_t = ᾱ_t / (1 − ᾱ_t) drops below 1 at t = 354.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the constants are read by config checks before torch is imported (docs/design.md §7)
    import torch

BETA_START = 0.00085
BETA_END = 0.012
NUM_TRAIN_TIMESTEPS = 1000


def scaled_linear_alphas_cumprod(
    beta_start: float = BETA_START, beta_end: float = BETA_END, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """ᾱ_t for t = 0..T−1 with β_t = (√β_start + t/(T−1)·(√β_end − √β_start))²; float32 [T] as diffusers' DDPM."""
    import torch

    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float32) ** 2  # [T]
    return torch.cumprod(1.0 - betas, dim=0)  # [T]


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio SNR_t = ᾱ_t / (1 − ᾱ_t) for every timestep."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ′ with a zero terminal SNR [kohya: --zero_terminal_snr] (Lin et al. 2023, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed").

    √ᾱ′_t = (√ᾱ_t − √ᾱ_T)·√ᾱ_0 / (√ᾱ_0 − √ᾱ_T): ᾱ′_T = 0 (pure noise at the last step), ᾱ′_0 = ᾱ_0. Unlike kohya,
    sdlora uses the rescaled schedule for the SNR-based loss weights too (kohya keeps the stale SNR table).
    """
    sqrt_ab = alphas_cumprod.double().sqrt()  # [T]
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return (sqrt_ab**2).to(alphas_cumprod.dtype)
