"""Per-sample losses (kohya-semantics §4.1): computed in float32, mean over C, H, W, then weighted per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_{C,H,W} (pred − target)² in float32, one value per sample: [B, C, H, W] → [B]."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(dim=1)


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_B (loss_b · w_b): w is 1 for training images and ``prior_loss_weight`` for regularisation images."""
    return (per_sample * weights.to(per_sample)).mean()
