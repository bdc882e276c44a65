"""The training dataset: one entry per image × repeat, each assigned to a bucket resolution.

``dataset[(entry, epoch)]`` loads the image, fits it to its bucket (resize to cover, crop) and returns the pixels,
caption, SDXL size conditioning (original h, w, crop top, left, target h, w) and the sample's loss weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sdlora.data.images import apply_fit, load_rgb, plan_fit
from sdlora.data.records import ImageRecord


@dataclass(frozen=True)
class Entry:
    record: int  # index into the records list
    bucket: tuple[int, int]  # (W, H)


def group_by_bucket(entries: list[Entry]) -> dict[tuple[int, int], list[int]]:
    """Bucket resolution → indices of its entries, buckets in sorted (W, H) order."""
    table: dict[tuple[int, int], list[int]] = {}
    for i, entry in enumerate(entries):
        table.setdefault(entry.bucket, []).append(i)
    return dict(sorted(table.items()))


class LoRADataset(Dataset):
    def __init__(self, records: list[ImageRecord], entries: list[Entry], seed: int) -> None:
        self.records = records
        self.entries = entries
        self.seed = seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, _epoch = key if isinstance(key, tuple) else (key, 0)
        entry = self.entries[index]
        record = self.records[entry.record]
        fit = plan_fit(record.size, entry.bucket)
        pixels = apply_fit(load_rgb(record.path), fit)  # [3, H, W]
        (ow, oh), (left, top), (bw, bh) = record.size, fit.offset, entry.bucket
        return {
            "pixels": pixels,
            "caption": record.caption,
            "size_cond": (oh, ow, top, left, bh, bw),
            "loss_weight": 1.0,
            "path": str(record.path),
        }


def collate_batch(samples: list[dict]) -> dict:
    """Stack one bucket's samples: pixels [B, 3, H, W], size_cond [B, 6], loss_weight [B]; captions/paths lists."""
    return {
        "pixels": torch.from_numpy(np.stack([s["pixels"] for s in samples])),
        "captions": [s["caption"] for s in samples],
        "size_cond": torch.tensor([s["size_cond"] for s in samples], dtype=torch.float32),
        "loss_weight": torch.tensor([s["loss_weight"] for s in samples], dtype=torch.float32),
        "paths": [s["path"] for s in samples],
    }
