"""Per-sample losses (docs/kohya.md §4.1, §4.4): elementwise in float32, optionally masked, mean over C, H, W.

With residual r = prediction − target and a per-sample c [kohya: --loss_type, --huber_c, --huber_scale,
--huber_schedule]:
  l2: r²;  l1: |r|;  huber: 2c(√(r² + c²) − c);  smooth_l1: 2(√(r² + c²) − c).
huber ≈ r² for |r| ≪ c and ≈ 2c|r| for |r| ≫ c; smooth_l1 ≈ r²/c and ≈ 2|r|.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdlora.config.schema import HuberSchedule, LossType


def huber_c(
    schedule: HuberSchedule, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, c: float = 0.1, scale: float = 1.0
) -> torch.Tensor:
    """Per-sample c [B] of the Huber losses.

    constant: c·scale.  exponential: exp(−α t)·scale with α = −ln(c)/1000 (scale at t=0, c·scale at t=1000).
    snr: (1 − c)/(1 + σ_t)² + c with σ_t = √((1 − ᾱ_t)/ᾱ_t) (kohya applies no scale here).
    """
    t = timesteps.to(torch.float32)
    schedule = HuberSchedule(schedule)
    if schedule == HuberSchedule.constant:
        return torch.full_like(t, c * scale)
    if schedule == HuberSchedule.exponential:
        alpha = -math.log(c) / alphas_cumprod.shape[0]
        return torch.exp(-alpha * t) * scale
    ab = alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]  # snr
    sigma = ((1.0 - ab) / ab).sqrt()
    return (1.0 - c) / (1.0 + sigma) ** 2 + c


def elementwise_loss(
    pred: torch.Tensor, target: torch.Tensor, loss_type: LossType = LossType.l2, c: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of every element in float32, [B, C, H, W]; ``c`` [B] is needed by huber and smooth_l1."""
    pred, target = pred.float(), target.float()
    loss_type = LossType(loss_type)
    if loss_type == LossType.l2:
        return F.mse_loss(pred, target, reduction="none")
    if loss_type == LossType.l1:
        return F.l1_loss(pred, target, reduction="none")
    if c is None:
        raise ValueError(f"loss type {loss_type.value} needs a per-sample c")
    c = c.float().reshape(-1, *([1] * (pred.ndim - 1)))
    squared = (pred - target) ** 2
    root = squared / (torch.sqrt(squared + c**2) + c)  # = √(r² + c²) − c without cancellation for small r
    return 2.0 * c * root if loss_type == LossType.huber else 2.0 * root


def reduce_per_sample(loss: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean_{C,H,W} of an elementwise loss → [B]; with a mask [B, 1, H, W] in [0, 1] the loss is multiplied by it
    first (kohya's masked loss: a plain mean, so masked-out pixels count as zero loss)."""
    if mask is not None:
        loss = loss * mask.to(loss)
    return loss.flatten(1).mean(dim=1)


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_{C,H,W} (pred − target)² in float32, one value per sample: [B, C, H, W] → [B]."""
    return reduce_per_sample(elementwise_loss(pred, target, LossType.l2))


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_B (loss_b · w_b): w is 1 for training images and ``prior_loss_weight`` for regularisation images."""
    return (per_sample * weights.to(per_sample)).mean()
