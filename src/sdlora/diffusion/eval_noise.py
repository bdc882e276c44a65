"""A deterministic validation loss: fixed timesteps and fixed noise per image, so that ``val/loss`` is comparable
across steps and across runs (sweeps minimise it).

For every validation image i and each of K timesteps t_k = min + ⌊(k + ½)(max − min)/K⌋ (k = 0 … K−1, spread over
the training range), ε_{i,k} is drawn from a generator seeded by (validation seed, image name, k); the loss is the
unweighted MSE between the U-Net output and the ε/v target, averaged over images and timesteps. Nothing in it depends
on the run's seed, loss options or data order.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def validation_timesteps(min_timestep: int, max_timestep: int, count: int) -> list[int]:
    """``count`` timesteps at the midpoints of equal slices of [min_timestep, max_timestep)."""
    if count < 1:
        raise ValueError("count must be ≥ 1")
    span = max(1, max_timestep - min_timestep)
    return [min(max_timestep - 1, min_timestep + int((k + 0.5) * span / count)) if span > 1 else min_timestep
            for k in range(count)]  # fmt: skip


def fixed_noise(shape: tuple[int, ...], seed: int, key: str, index: int) -> torch.Tensor:
    """Standard-normal noise of ``shape`` (CPU, float32) determined by (seed, key, index) alone."""
    import torch

    digest = hashlib.sha256(f"{seed}\0{key}\0{index}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.randn(shape, generator=generator)
