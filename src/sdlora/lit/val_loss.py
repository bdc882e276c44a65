"""The deterministic validation loss ``val/loss`` (see :mod:`sdlora.diffusion.eval_noise`).

Every validation image is encoded with the VAE posterior's mean (no sampling), its caption without any augmentation,
and noised at K fixed timesteps with noise fixed per (validation seed, image path, k). The loss is the unweighted
MSE to the ε/v target, summed over images and timesteps and divided by their number at the end of the evaluation.
With ``validation.timestep_bands`` = B the same losses are also averaged per band of timesteps — B equal slices of
[0, 1000): ``t000-249``, ``t250-499``, … for B = 4 — over the validation timesteps that fall in it (a band without
one is not reported), so one sees where a LoRA improves or overfits.
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


def timestep_bands(count: int, num_train_timesteps: int = 1000) -> list[tuple[int, int]]:
    """``count`` equal slices (first, last timestep) of [0, num_train_timesteps); none for count 0."""
    edges = [round(i * num_train_timesteps / count) for i in range(count + 1)] if count > 0 else []
    return [(edges[i], edges[i + 1] - 1) for i in range(count)]


def band_label(band: tuple[int, int]) -> str:
    """``(0, 249)`` → ``t000-249`` (the metric is ``val/loss_t000-249``)."""
    return f"t{band[0]:03d}-{band[1]:03d}"


class ValidationLoss:
    def __init__(
        self, min_timestep: int, max_timestep: int, num_timesteps: int = 4, seed: int = 0, bands: int = 0
    ) -> None:
        self.timesteps = validation_timesteps(min_timestep, max_timestep, num_timesteps)
        self.seed = seed
        self.total = 0.0
        self.count = 0
        self.history: list[tuple[int, float]] = []  # (global step, val/loss) of every evaluation
        all_bands = timestep_bands(bands)
        self.band_of = [next((b for b in all_bands if b[0] <= t <= b[1]), None) for t in self.timesteps]
        self.band_sums: dict[tuple[int, int], list[float]] = {}

    def reset(self) -> None:
        self.total, self.count = 0.0, 0
        self.band_sums = {}

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def band_values(self) -> dict[str, float]:
        """The mean loss of every band that holds validation timesteps, by label (``t000-249``)."""
        return {band_label(b): total / n for b, (total, n) in sorted(self.band_sums.items()) if n}

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
            loss = float(module.objective.plain_loss(prediction, noised).sum())
            self.total += loss
            self.count += batch_size
            if self.band_of[k] is not None:
                sums = self.band_sums.setdefault(self.band_of[k], [0.0, 0])
                sums[0] += loss
                sums[1] += batch_size
