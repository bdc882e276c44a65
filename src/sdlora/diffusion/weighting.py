"""Per-sample loss weights from the signal-to-noise ratio (docs/kohya.md §4.2).

All take SNR_t = ᾱ_t/(1 − ᾱ_t) per sample ([B]) and return a weight per sample ([B]); the objective multiplies them
in kohya's order: min-SNR → scale-v-pred → v-pred-like → debiased. Where kohya caps SNR, s = min(SNR, 1000).
"""

from __future__ import annotations

import torch

SNR_CAP = 1000.0


def min_snr_weight(snr: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Min-SNR-γ [kohya: --min_snr_gamma] (Hang et al. 2023).

    ε-prediction: w = min(SNR, γ)/SNR = min(1, γ/SNR);  v-prediction: w = min(SNR, γ)/(SNR + 1).
    The v form is the corrected one of current sd-scripts; v21.8.8 used the ε form for v models too (a bug).
    Written as min(1, γ/SNR) for ε so that SNR = 0 (zero terminal SNR) gives 1, not 0/0.
    """
    if v_prediction:
        return torch.clamp(snr, max=gamma) / (snr + 1.0)
    return torch.where(snr > gamma, gamma / snr.clamp(min=gamma), torch.ones_like(snr))


def scale_v_pred_loss_weight(snr: torch.Tensor) -> torch.Tensor:
    """w = s/(s + 1), s = min(SNR, 1000) [kohya: --scale_v_pred_loss_like_noise_pred]: a v-model's loss scaled to the
    equivalent ε-loss. From ε = √(1−ᾱ)·x_t + √ᾱ·v, the ε-error is √ᾱ times the v-error, so
    MSE_ε = ᾱ·MSE_v = SNR/(SNR + 1)·MSE_v."""
    s = snr.clamp(max=SNR_CAP)
    return s / (s + 1.0)


def v_pred_like_loss_factor(snr: torch.Tensor, strength: float) -> torch.Tensor:
    """loss·(1 + λ(s + 1)/s), s = min(SNR, 1000) [kohya: --v_pred_like_loss λ]: adds λ times the v-equivalent loss
    MSE_v = MSE_ε·(SNR + 1)/SNR to an ε-model's loss. For λ = 1 the added term (s + 1)/s is ≈1.001 at t=0, 1.33 at
    t=200, 3.6 at t=500 and 215 at t=999, so the factor is one more than that."""
    s = snr.clamp(max=SNR_CAP)
    return 1.0 + strength * (s + 1.0) / s


def debiased_weight(snr: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Debiased estimation [kohya: --debiased_estimation_loss]: ε: w = 1/√s; v: w = 1/(s + 1); s = min(SNR, 1000)."""
    s = snr.clamp(max=SNR_CAP)
    return 1.0 / (s + 1.0) if v_prediction else 1.0 / s.sqrt()
