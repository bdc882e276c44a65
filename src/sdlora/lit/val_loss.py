"""The deterministic validation loss ``val/loss`` (see :mod:`sdlora.diffusion.eval_noise`).

Every validation image is encoded with the VAE posterior's mean (no sampling), its caption without any augmentation,
and noised at K fixed timesteps with noise fixed per (validation seed, image path, k). The loss is the unweighted
MSE to the ε/v target, summed over images and timesteps and divided by their number at the end of the evaluation.
The LightningModule runs it in eval mode, so the LoRA's dropouts are off (unlike kohya, whose network stays in
training mode during in-training evaluation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sdlora.diffusion.eval_noise import fixed_noise, validation_timesteps

if TYPE_CHECKING:
    from sdlora.data.batch import Batch
    from sdlora.lit.module import LoRATrainingModule


class ValidationLoss:
    def __init__(self, min_timestep: int, max_timestep: int, num_timesteps: int = 4, seed: int = 0) -> None:
        self.timesteps = validation_timesteps(min_timestep, max_timestep, num_timesteps)
        self.seed = seed
        self.total = 0.0
        self.count = 0
        self.history: list[tuple[int, float]] = []  # (global step, val/loss) of every evaluation

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @torch.no_grad()
    def update(self, module: LoRATrainingModule, batch: Batch) -> None:
        """Add the losses of one batch at every fixed timestep."""
        latents = module.encode_latents(batch.pixels, sample=False)  # [B, 4, h, w]
        text = module.family.encode_text(module.components, batch.captions)
        batch_size = latents.shape[0]
        for k, t in enumerate(self.timesteps):
            noise = torch.stack([fixed_noise(tuple(latents.shape[1:]), self.seed, path, k) for path in batch.paths])
            timesteps = torch.full((batch_size,), t, dtype=torch.long, device=latents.device)
            noised = module.objective.noise_with(latents, noise.to(latents), timesteps)
            prediction = module.predict(noised, text, batch.size_cond)
            self.total += float(module.objective.plain_loss(prediction, noised).sum())
            self.count += batch_size
