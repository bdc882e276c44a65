"""LightningDataModule over the prepared dataset and bucket batch sampler."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from sdlora.data.build import TrainingData
from sdlora.data.dataset import collate_batch
from sdlora.data.validation import ValidationData


class LoRADataModule(L.LightningDataModule):
    def __init__(
        self, data: TrainingData, num_workers: int = 0, validation: ValidationData | None = None,
        validate_during_fit: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data = data
        self.num_workers = num_workers
        self.validation = validation
        self.validate_during_fit = validate_during_fit

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.data.dataset,
            batch_sampler=self.data.sampler,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """The validation images during fit (``validation.every_n_steps``); none otherwise."""
        if self.validation is None or not self.validate_during_fit:
            return []
        return self.validation_loader()

    def validation_loader(self) -> DataLoader:
        return DataLoader(
            self.validation.dataset, batch_sampler=self.validation.sampler, num_workers=0, collate_fn=collate_batch
        )
