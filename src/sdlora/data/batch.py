"""The batch the data loader hands the training step: one bucket's samples, stacked.

Built by :func:`collate_batch` from the dataset's samples (:mod:`sdlora.data.dataset`) and read by the
LightningModule. Image side: ``pixels`` [B, 3, H, W] in [−1, 1], or with a latent cache the VAE posterior
``latent_mean``/``latent_std`` [B, 4, H/8, W/8]. Text side: ``captions``, or with a text-encoder cache
``text_hidden`` [B, L, D] (and SDXL's ``text_pooled`` [B, P]). Always: SDXL's ``size_cond`` [B, 6] (original h, w,
crop top, left, target h, w), ``loss_weight`` [B] (``loss.prior_loss_weight`` for regularisation images) and the
image ``paths``; ``mask`` [B, 1, H, W] with ``loss.masked``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    captions: list[str]
    paths: list[str]
    size_cond: torch.Tensor  # [B, 6] float32
    loss_weight: torch.Tensor  # [B] float32
    pixels: torch.Tensor | None = None  # [B, 3, H, W]
    latent_mean: torch.Tensor | None = None  # [B, 4, h, w]
    latent_std: torch.Tensor | None = None  # [B, 4, h, w]
    text_hidden: torch.Tensor | None = None  # [B, L, D]
    text_pooled: torch.Tensor | None = None  # [B, P]
    mask: torch.Tensor | None = None  # [B, 1, H, W]

    def __len__(self) -> int:
        return len(self.paths)


_STACKED = ("pixels", "latent_mean", "latent_std", "text_hidden", "text_pooled", "mask")


def collate_batch(samples: list[dict]) -> Batch:
    """Stack one bucket's samples (dicts from the dataset) into a :class:`Batch`."""
    tensors = {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in _STACKED if key in samples[0]}
    return Batch(
        captions=[s["caption"] for s in samples],
        paths=[s["path"] for s in samples],
        size_cond=torch.tensor([s["size_cond"] for s in samples], dtype=torch.float32),
        loss_weight=torch.tensor([s["loss_weight"] for s in samples], dtype=torch.float32),
        **tensors,
    )
