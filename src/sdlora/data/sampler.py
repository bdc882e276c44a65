"""Batches that never mix buckets, in an order fixed by (seed, epoch) and resumable mid-epoch; shared between the
processes of a distributed run.

Each bucket holds dataset entries (one per image × repeat). Per epoch the entries of every bucket are shuffled, cut
into ``ceil(n_b / G)`` *global batches* of G = batch_size × num_replicas entries (the last one of a bucket may be
short, docs/kohya.md §5.3), and the order of the global batches is shuffled. Items are ``(entry, epoch)`` pairs so
the dataset can draw per-sample randomness from (seed, epoch, entry) — the same in every worker process, on every
rank and after a resume.

Distributed (``num_replicas`` W > 1): every rank computes the same global batches and takes its share of each — rank
r gets rows [r·b, (r+1)·b) where b = ⌈n / W⌉ for a global batch of n entries — so at every step all ranks train on
the same bucket, each on distinct entries, and every rank makes the same number of steps (the number of global
batches, which is also what one process with batch_size × W would make, batch for batch). A short global batch
(n not a multiple of W) is padded to W·b entries by repeating its own first entries, as PyTorch's
``DistributedSampler`` pads: those few samples count twice in that step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


def rank_share(batch: list[int], num_replicas: int, rank: int) -> list[int]:
    """Rank ``rank``'s rows of a global batch: ⌈n / W⌉ entries, the batch padded cyclically to a multiple of W."""
    if num_replicas == 1:
        return list(batch)
    per_rank = math.ceil(len(batch) / num_replicas)
    padded = [batch[i % len(batch)] for i in range(per_rank * num_replicas)]
    return padded[rank * per_rank : (rank + 1) * per_rank]


class BucketBatchSampler:
    """Yields lists of ``(entry index, epoch)`` from one bucket at a time (this rank's share of each global batch).
    A batch sampler for ``torch.utils.data.DataLoader(batch_sampler=…)``; plain Python, so that planning does not
    import torch."""

    def __init__(
        self, buckets: list[list[int]], batch_size: int, seed: int, shuffle: bool = True, num_replicas: int = 1
    ) -> None:
        self.buckets = [list(b) for b in buckets if b]
        self.batch_size = batch_size  # per process
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = 0
        self.epoch = 0
        self.start = 0  # batches of the current epoch already consumed (set when resuming)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def set_rank(self, rank: int, num_replicas: int) -> None:
        """This process's place among the ranks (set once the Trainer knows it)."""
        if num_replicas != self.num_replicas:
            raise ValueError(f"the data plan is made for {self.num_replicas} process(es), not {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on every rank (the number of global batches)."""
        return sum(math.ceil(len(b) / self.global_batch_size) for b in self.buckets)

    def batches(self, epoch: int) -> list[list[int]]:
        """The whole list of global batches of ``epoch`` (entry indices), the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        size = self.global_batch_size
        batches = []
        for bucket in self.buckets:
            order = [bucket[i] for i in rng.permutation(len(bucket))] if self.shuffle else bucket
            batches.extend(order[i : i + size] for i in range(0, len(order), size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        for batch in self.batches(epoch)[self.start :]:
            yield [(entry, epoch) for entry in rank_share(batch, self.num_replicas, self.rank)]
        self.start = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]
