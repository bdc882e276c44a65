"""One global batch shared by W processes: each rank draws the randomness of the *whole* global batch and keeps its
own rows, so that a distributed step sees exactly the noise, timesteps and latent samples one process would draw
for the global batch.

With ``trainer=ddp`` every rank holds the same generator (seeded from ``seed``) and trains on its share of one global
batch (:class:`~sdlora.data.sampler.BucketBatchSampler`): rank r holds rows [r·b, (r+1)·b) of a global batch of W·b
samples. Drawing ε [W·b, C, h, w] (and t, offsets, multires layers, the posterior sample) and slicing rows keeps the
generators of all ranks in step and makes the run equal — up to floating-point summation order — to one process
with ``data.batch_size × W``. (Neuron/rank dropout of the LoRA modules uses torch's global RNG, the same on every
rank, and is not split this way.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchShare:
    """This process's place in the global batch: ``rank`` of ``world_size`` equal shares."""

    rank: int = 0
    world_size: int = 1

    def rows(self, local: int) -> slice:
        """This rank's rows of a global batch whose shares hold ``local`` samples each."""
        return slice(self.rank * local, (self.rank + 1) * local)

    def randn(self, shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        """ε ~ N(0, I) of ``shape`` [b, …]: this rank's rows of one draw [W·b, …] (device and dtype of ``like``)."""
        full = (shape[0] * self.world_size, *shape[1:])
        noise = torch.randn(full, generator=generator, device=like.device, dtype=like.dtype)
        return noise[self.rows(shape[0])] if self.world_size > 1 else noise

    def noise(self, objective, latents: torch.Tensor, generator: torch.Generator | None):
        """``objective.noise`` drawn for the global batch, restricted to this rank's rows of ``latents`` [b, C, h, w].

        The other ranks' latents are not known here: their rows are zeros, which only the adaptive noise offset reads
        (per sample), so this rank's rows are exact.
        """
        if self.world_size == 1:
            return objective.noise(latents, generator=generator)
        from sdlora.diffusion.objective import Noised

        b = latents.shape[0]
        full = latents.new_zeros((b * self.world_size, *latents.shape[1:]))  # [W·b, C, h, w]
        full[self.rows(b)] = latents
        noised = objective.noise(full, generator=generator)
        rows = self.rows(b)
        return Noised(noised.noisy[rows], noised.timesteps[rows], noised.target[rows])
