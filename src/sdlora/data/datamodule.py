"""LightningDataModule over the prepared dataset and bucket batch sampler."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from sdlora.data.build import TrainingData
from sdlora.data.dataset import collate_batch


class LoRADataModule(L.LightningDataModule):
    def __init__(self, data: TrainingData, num_workers: int = 0) -> None:
        super().__init__()
        self.data = data
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.data.dataset,
            batch_sampler=self.data.sampler,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )
