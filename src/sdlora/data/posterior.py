"""Sampling a latent from a cached VAE posterior (the training step's side of ``data.cache_latents``)."""

from __future__ import annotations

import torch


def sample_posterior(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None, share=None
) -> torch.Tensor:
    """z = mean + std · ε, ε ~ N(0, I) drawn from ``generator`` in the posterior's dtype, returned as float32.

    The same draw as diffusers' ``DiagonalGaussianDistribution.sample(generator)``, so a cached posterior gives the
    latents the VAE would have given (unscaled; the caller multiplies by the family's latent scale). ``share``
    (:class:`~sdlora.distributed.share.BatchShare`): draw ε for the whole global batch and keep this rank's rows.
    """
    if share is not None:
        noise = share.randn(tuple(mean.shape), generator, mean)  # [B, C, h, w]
    else:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)  # [B, C, h, w]
    return (mean + std * noise).float()
