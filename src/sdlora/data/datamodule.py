"""LightningDataModule over the prepared dataset and bucket batch sampler; it fills the data caches in Lightning's
``prepare_data``/``setup`` hooks, so that with several processes only global rank 0 writes cache files."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from sdlora.data.build import TrainingData
from sdlora.data.caching import DataCaches
from sdlora.data.dataset import collate_batch
from sdlora.data.validation import ValidationData


class LoRADataModule(L.LightningDataModule):
    def __init__(
        self, data: TrainingData, num_workers: int = 0, validation: ValidationData | None = None,
        validate_during_fit: bool = False, caches: DataCaches | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data = data
        self.num_workers = num_workers
        self.validation = validation
        self.validate_during_fit = validate_during_fit
        self.caches = caches
        self.prepare_data_per_node = False  # one process writes the cache files, even on several nodes

    def prepare_data(self) -> None:
        """Global rank 0 alone: fill the caches and write the cache files (the other ranks wait)."""
        if self.caches is not None:
            self.caches.fill(self.trainer.strategy.root_device, write=True)

    def setup(self, stage: str) -> None:
        """Every rank: its in-memory caches (reading rank 0's files), its share of the global batches."""
        trainer = self.trainer
        if self.caches is not None:
            self.caches.fill(trainer.strategy.root_device, write=trainer.is_global_zero)
        self.data.sampler.set_rank(trainer.global_rank, trainer.world_size)

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
