"""Held-out validation images: a folder (``validation.dir``) or a seeded fraction of the training images
(``validation.split``), each seen once per evaluation, centre-cropped to its bucket, without any augmentation.
The loss computed on them is :mod:`sdlora.lit.val_loss`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from sdlora.config.schema import DataConfig, TrainConfig
from sdlora.data.buckets import BucketAssigner, BucketSpec
from sdlora.data.dataset import Entry, LoRADataset, group_by_bucket
from sdlora.data.folders import SubsetOptions, scan_subsets
from sdlora.data.records import ImageRecord, ScanResult, scan_records
from sdlora.data.sampler import BucketBatchSampler
from sdlora.data.subsets import subset_options
from sdlora.errors import SdloraError


@dataclass
class ValidationData:
    dataset: LoRADataset
    sampler: BucketBatchSampler
    source: str  # "validation.dir=…" or "validation.split=…"

    @property
    def num_images(self) -> int:
        return len(self.dataset.records)


def _without_augmentation(record: ImageRecord) -> ImageRecord:
    """The record with its folder's caption extension only: no flip, crop, colour or caption randomness."""
    options = SubsetOptions(caption_extension=record.subset.options.caption_extension)
    return dataclasses.replace(record, subset=dataclasses.replace(record.subset, options=options))


def hold_out(scan: ScanResult, fraction: float, seed: int) -> tuple[ScanResult, list[ImageRecord]]:
    """Move ⌈round(fraction·n)⌉ (at least 1) of the n training images, chosen by ``seed``, out of ``scan``: the scan
    without them, and the held-out records."""
    training = [i for i, r in enumerate(scan.records) if not r.subset.is_reg]
    if len(training) < 2:
        raise SdloraError(
            f"validation.split={fraction} needs at least 2 training images (found {len(training)}): "
            "add images or use validation.dir"
        )
    count = min(len(training) - 1, max(1, round(fraction * len(training))))
    chosen = sorted(np.random.default_rng([seed, 0x5A11]).choice(training, size=count, replace=False).tolist())
    held = [scan.records[i] for i in chosen]
    return scan.without(held), held


def scan_validation_dir(directory: str, data: DataConfig) -> list[ImageRecord]:
    """The images of a held-out kohya-style folder (its ``<repeats>_<name>`` subfolders; repeats are ignored)."""
    subsets, _ = scan_subsets(directory, "validation.dir", False, subset_options(data))
    scan = scan_records(subsets, None, data.strict, min(8, os.cpu_count() or 1), data.max_caption_bytes)
    if not scan.records:
        raise SdloraError(f"validation.dir={directory!r} has no usable images in its '<repeats>_<name>' folders")
    return scan.records


def build_validation_data(records: list[ImageRecord], spec: BucketSpec, batch_size: int, source: str) -> ValidationData:
    """One entry per image in its bucket (as training would place it), batches in a fixed order."""
    assigner = BucketAssigner(spec)
    kept, placements = [], []
    for record in records:
        placement = assigner.select(record.size)
        if placement is not None:  # images too small for any bucket are reported for training the same way
            kept.append(_without_augmentation(record))
            placements.append(placement)
    if not kept:
        raise SdloraError(f"{source}: no validation image fits a bucket")
    entries = [Entry(i, p.bucket) for i, p in enumerate(placements)]
    sampler = BucketBatchSampler(list(group_by_bucket(entries).values()), batch_size, seed=0, shuffle=False)
    dataset = LoRADataset(kept, entries, seed=0, placements=placements)
    return ValidationData(dataset, sampler, source)


def validation_from_config(
    config: TrainConfig, held_out: list[ImageRecord], resolution: tuple[int, int]
) -> ValidationData | None:
    """The run's validation images (``validation.dir`` or the ``validation.split`` hold-out), or None if off."""
    from sdlora.data.build import bucket_spec

    settings = config.validation
    if settings.dir:
        records, source = scan_validation_dir(settings.dir, config.data), f"validation.dir={settings.dir!r}"
    elif held_out:
        records, source = held_out, f"validation.split={settings.split}"
    else:
        return None
    batch_size = settings.batch_size or config.data.batch_size
    return build_validation_data(records, bucket_spec(config.data, resolution), batch_size, source)
