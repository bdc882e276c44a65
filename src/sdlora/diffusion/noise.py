"""Noise modifications (docs/kohya.md §4.3), applied in kohya's order: ε → offset → multires; ip-noise last.

Every function draws from an explicit ``torch.Generator`` so that a run (and a resumed run) is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def offset_noise(
    noise: torch.Tensor,
    latents: torch.Tensor,
    offset: float,
    *,
    adaptive_scale: float | None = None,
    random_strength: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ε + o_eff · N(0, 1)[B, C, 1, 1]: a per-sample, per-channel constant shift [kohya: --noise_offset].

    ``random_strength`` [--noise_offset_random_strength]: o ← U(0, 1)·o, one draw per batch.
    ``adaptive_scale`` a [--adaptive_noise_scale]: o_eff = max(0, o + a·|mean_{H,W}(x₀)|) per sample and channel.
    """
    batch, channels = latents.shape[:2]
    strength = (
        offset * _rand((1,), generator, latents) if random_strength else torch.tensor(offset, device=latents.device)
    )
    if adaptive_scale is not None:
        mean = latents.mean(dim=(2, 3), keepdim=True).abs()  # [B, C, 1, 1]
        strength = torch.clamp(strength + adaptive_scale * mean, min=0.0)
    return noise + strength * _randn((batch, channels, 1, 1), generator, latents)


def multires_noise(
    noise: torch.Tensor, iterations: int, discount: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pyramid noise [kohya: --multires_noise_iterations k, --multires_noise_discount d (default 0.3)].

    For i = 0 … k−1: r ~ U(2, 4); add Gaussian noise drawn at (max(1, ⌊H/rⁱ⌋), max(1, ⌊W/rⁱ⌋)), upsampled
    bilinearly to H×W, times dⁱ; stop once a side reaches 1; finally divide by the std of the whole batch tensor.
    (i = 0 adds a second full-resolution Gaussian with weight 1, as kohya.)
    """
    batch, channels, height, width = noise.shape
    out = noise.clone()
    for i in range(iterations):
        r = 2.0 + 2.0 * float(_rand((1,), generator, noise))
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        layer = _randn((batch, channels, h, w), generator, noise)
        out = out + F.interpolate(layer, size=(height, width), mode="bilinear") * discount**i
        if h == 1 or w == 1:
            break
    return out / out.std()


def input_perturbation(
    noise: torch.Tensor, gamma: float, *, random_strength: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """ε + γ·N(0, 1), the noise used to *noise* the latents only [kohya: --ip_noise_gamma] (Ning et al. 2023);
    the regression target keeps the unperturbed ε. ``random_strength``: γ ← U(0, 1)·γ, one draw per batch."""
    strength = gamma * float(_rand((1,), generator, noise)) if random_strength else gamma
    return noise + strength * _randn(noise.shape, generator, noise)
