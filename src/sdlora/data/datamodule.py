"""LightningDataModule over the prepared dataset and bucket batch sampler.

It fills the data caches in Lightning's ``prepare_data``/``setup`` hooks, so that with several processes only global
rank 0 writes cache files. The training DataLoader is resumable: Lightning saves its ``state_dict`` in every
checkpoint (a state folder) and hands it back before the first batch of a resumed run, so the run continues mid-epoch
with the next batch of the same order. The DataLoaders draw their worker seeds from their own generators, never from
the global torch RNG, so creating an iterator (at every epoch start, or for a validation pass) does not shift the
random streams of training.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from sdlora.data.batch import collate_batch
from sdlora.data.build import TrainingData
from sdlora.data.held_out import ValidationData
from sdlora.data.run_caches import DataCaches
from sdlora.data.sampler import BucketBatchSampler
from sdlora.data.workers import quiet_worker


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`BucketBatchSampler` whose position Lightning saves and restores.

    ``position`` returns the batches of the current epoch the training loop has processed. The position is taken from
    the loop, not from the batches yielded: Lightning prefetches one batch, so the loader is always one ahead.
    """

    position: Callable[[], int] | None = None

    def state_dict(self) -> dict:
        sampler: BucketBatchSampler = self.batch_sampler
        consumed = self.position() if self.position is not None else sampler.start
        epoch = sampler.epoch
        if consumed >= len(sampler):  # the epoch is done: the next batch is the first of the next epoch
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "start": consumed, "seed": sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        sampler: BucketBatchSampler = self.batch_sampler
        sampler.load_state_dict({**state, "seed": sampler.seed})  # the config's seed (it may differ on purpose)


class SamplerEpoch(L.Callback):
    """Tells the bucket batch sampler which epoch starts, so every epoch has its own order and augmentation.

    (Lightning's own ``set_epoch`` call reaches samplers and the sampler *inside* a batch sampler, not a batch sampler
    itself.) An epoch resumed mid-way gets no ``on_train_epoch_start``; its sampler state comes from the checkpoint.
    """

    def __init__(self, sampler: BucketBatchSampler) -> None:
        self.sampler = sampler

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.set_epoch(trainer.current_epoch)


class LoRADataModule(L.LightningDataModule):
    def __init__(
        self, data: TrainingData, num_workers: int = 0, validation: ValidationData | None = None,
        validate_during_fit: bool = False, caches: DataCaches | None = None, persistent_workers: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.data = data
        self.num_workers = num_workers
        self.validation = validation
        self.validate_during_fit = validate_during_fit
        self.caches = caches
        self.persistent_workers = persistent_workers  # [data.persistent_workers; persistent_data_loader_workers]
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
        loader = ResumableDataLoader(
            self.data.dataset,
            batch_sampler=self.data.sampler,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0 and self.persistent_workers,
            generator=torch.Generator().manual_seed(self.data.sampler.seed),
            worker_init_fn=quiet_worker,  # no traceback from a worker when the training process is killed
        )
        loader.position = self._batches_processed
        return loader

    def _batches_processed(self) -> int:
        from sdlora.lightning_compat import batches_processed

        return batches_processed(self.trainer)

    def val_dataloader(self) -> DataLoader | list:
        """The validation images during fit (``validation.every_n_steps``); none otherwise."""
        if self.validation is None or not self.validate_during_fit:
            return []
        return self.validation_loader()

    def validation_loader(self) -> DataLoader:
        return DataLoader(
            self.validation.dataset, batch_sampler=self.validation.sampler, num_workers=0, collate_fn=collate_batch,
            generator=torch.Generator(),
        )  # fmt: skip
