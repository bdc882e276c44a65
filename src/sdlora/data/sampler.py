"""Batches that never mix buckets, in an order fixed by (seed, epoch) and resumable mid-epoch.

Each bucket holds dataset entries (one per image × repeat). Per epoch the entries of every bucket are shuffled, cut
into ``ceil(n_b / batch_size)`` batches (the last one of a bucket may be short, kohya-semantics §5.3), and the batch
order is shuffled. Items are ``(entry, epoch)`` pairs so the dataset can draw per-sample randomness from
(seed, epoch, entry) — the same in every worker process and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields lists of ``(entry index, epoch)`` from one bucket at a time."""

    def __init__(self, buckets: list[list[int]], batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.buckets = [list(b) for b in buckets if b]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0  # batches of the current epoch already consumed (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(b) / self.batch_size) for b in self.buckets)

    def batches(self, epoch: int) -> list[list[int]]:
        """The whole batch list of ``epoch`` (entry indices)."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket in self.buckets:
            order = [bucket[i] for i in rng.permutation(len(bucket))] if self.shuffle else bucket
            batches.extend(order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        for batch in self.batches(epoch)[self.start :]:
            yield [(entry, epoch) for entry in batch]
        self.start = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]
