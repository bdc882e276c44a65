"""From ``cfg.data`` to a data plan, a dataset and a bucket batch sampler (no model needed)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sdlora.data.captions import normalise_extension
from sdlora.data.dataset import Entry, LoRADataset, group_by_bucket
from sdlora.data.folders import scan_subsets
from sdlora.data.plan import DataPlan
from sdlora.data.records import scan_records
from sdlora.data.sampler import BucketBatchSampler
from sdlora.data.steps import training_length
from sdlora.errors import SdloraError


@dataclass
class TrainingData:
    plan: DataPlan
    dataset: LoRADataset
    sampler: BucketBatchSampler


def build_training_data(
    data_cfg, resolution: tuple[int, int], seed: int, accumulate_grad_batches: int, max_steps: int, max_epochs
) -> TrainingData:
    """Scan ``data.train_dir``, assign every image × repeat to a bucket and work out the training length.

    Until aspect-ratio bucketing is added, every image goes to the single bucket ``resolution`` (resized to cover
    it, centre-cropped).
    """
    subsets, warnings = scan_subsets(data_cfg.train_dir)
    extension = normalise_extension(data_cfg.caption_extension)
    scan = scan_records(subsets, extension, strict=data_cfg.strict, workers=min(8, os.cpu_count() or 1))
    if not scan.records:
        found = ", ".join(s.name for s in subsets)
        raise SdloraError(
            f"data.train_dir={data_cfg.train_dir!r} has no usable images in its subfolders ({found}); "
            "images must be .png/.jpg/.jpeg/.webp/.bmp files directly inside a '<repeats>_<name>' folder"
        )
    entries = [Entry(i, resolution) for i, record in enumerate(scan.records) for _ in range(record.repeats)]
    sampler = BucketBatchSampler(list(group_by_bucket(entries).values()), data_cfg.batch_size, seed=seed)
    length = training_length(len(sampler), accumulate_grad_batches, max_steps, max_epochs)
    plan = DataPlan(
        scan.records,
        entries,
        scan,
        data_cfg.batch_size,
        accumulate_grad_batches,
        length,
        max_steps,
        max_epochs,
        warnings=warnings + scan.warnings,
    )
    return TrainingData(plan, LoRADataset(scan.records, entries, seed), sampler)
