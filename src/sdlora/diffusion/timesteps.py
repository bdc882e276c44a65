"""Timestep sampling [kohya: --min_timestep, --max_timestep]."""

from __future__ import annotations

import torch


def sample_timesteps(
    batch_size: int,
    min_timestep: int,
    max_timestep: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One timestep per sample, uniform over the integers of [min_timestep, max_timestep).

    ``min_timestep == max_timestep`` gives that constant timestep for every sample (current sd-scripts; v21.8.8
    rejected it). Returns a long tensor [B] on ``device``.
    """
    if min_timestep == max_timestep:
        return torch.full((batch_size,), min_timestep, dtype=torch.long, device=device)
    gen_device = generator.device if generator is not None else device
    t = torch.randint(min_timestep, max_timestep, (batch_size,), generator=generator, device=gen_device)  # [B]
    return t.to(device)
