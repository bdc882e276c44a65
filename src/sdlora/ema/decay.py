"""EMA decay schedules as pure functions (n counts EMA updates, from 1).

An EMA update is θ̄ ← β·θ̄ + (1 − β)·θ. sdlora has three schedules:

- constant [``ema.decay``]: β = decay at every update (θ̄ starts as a copy of the weights at the start of training);
- warm-up [``ema.power``, ``ema.inv_gamma``; diffusers' ``EMAModel(use_ema_warmup=True)``]:
  β_n = min(decay, 1 − (1 + (n − 1)/γ_inv)^−power); β₁ = 0, so the first update copies the weights;
- power function [``ema.posthoc``; Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
  Models", eq. 3]: β_n = (1 − 1/n)^(γ+1). Its average weighs update τ ≤ t by (τ^(γ+1) − (τ−1)^(γ+1))/t^(γ+1) ∝ τ^γ,
  a profile whose relative standard deviation σ_rel = √((γ+1)/((γ+2)²(γ+3))) — the "EMA length" — stays the same as
  training goes on.
"""

from __future__ import annotations

import numpy as np


def ema_decay(update: int, decay: float, power: float | None = None, inv_gamma: float = 1.0) -> float:
    """β of the ``update``-th EMA update: ``decay``, or with ``power`` the warm-up form capped at ``decay``."""
    if update < 1:
        raise ValueError(f"EMA updates count from 1, got {update}")
    if power is None:
        return decay
    return min(decay, 1.0 - (1.0 + (update - 1) / inv_gamma) ** -power)


def power_beta(update: int, gamma: float) -> float:
    """β_n = (1 − 1/n)^(γ+1) of the power-function EMA with exponent γ (β₁ = 0)."""
    if update < 1:
        raise ValueError(f"EMA updates count from 1, got {update}")
    return (1.0 - 1.0 / update) ** (gamma + 1.0)


def sigma_rel(gamma: float) -> float:
    """σ_rel = √((γ+1)/((γ+2)²(γ+3))): the relative width of the power-function profile with exponent γ."""
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


def gamma_for(sigma: float) -> float:
    """The exponent γ with ``sigma_rel(γ) = sigma``: the largest real root of
    γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0 (σ_rel must be in (0, √(1/12)) ≈ (0, 0.289), γ > −1)."""
    if not 0 < sigma < (1 / 12) ** 0.5:
        raise ValueError(f"sigma_rel must be between 0 and 0.288 (exclusive), got {sigma}")
    t = sigma**-2
    roots = np.roots([1.0, 7.0, 16.0 - t, 12.0 - t])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))
