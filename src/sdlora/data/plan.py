"""The data plan: what training will see, printed and written to ``data_plan.json`` before the first step.

JSON format (DESIGN §3): ``{"buckets": [{"resolution": [W, H], "count_with_repeats": n, "images": [{"path": abs,
"repeats": r}]}], "steps_per_epoch": S, "total_steps": T, "num_images": n, "num_reg_images": m, "warnings": [...]}``
plus ``subsets``, ``batch_size``, ``batches_per_epoch`` and ``epochs``. ``num_images`` counts distinct training image
files (``num_reg_images`` regularisation ones); ``count_with_repeats`` counts entries, i.e. images × repeats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sdlora.data.dataset import Entry, group_by_bucket
from sdlora.data.records import ImageRecord, ScanResult
from sdlora.data.steps import TrainingLength


@dataclass
class DataPlan:
    records: list[ImageRecord]
    entries: list[Entry]
    scan: ScanResult
    batch_size: int
    accumulate_grad_batches: int
    length: TrainingLength
    max_steps: int
    max_epochs: int | None
    warnings: list[str] = field(default_factory=list)

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        """Bucket resolution → entry indices, in sorted resolution order."""
        return group_by_bucket(self.entries)

    @property
    def num_images(self) -> int:
        return sum(not r.subset.is_reg for r in self.records)

    @property
    def num_reg_images(self) -> int:
        return sum(r.subset.is_reg for r in self.records)

    def to_json(self) -> dict:
        buckets = []
        for resolution, entries in self.buckets().items():
            per_record = Counter(self.entries[i].record for i in entries)
            images = [{"path": str(self.records[r].path), "repeats": n} for r, n in sorted(per_record.items())]
            buckets.append({"resolution": list(resolution), "count_with_repeats": len(entries), "images": images})
        subsets = [
            {
                "path": str(directory),
                "images": count,
                "caption_files": self.scan.captions_per_subset.get(directory, 0),
                "repeats": next((r.repeats for r in self.records if r.subset.directory == directory), None),
            }
            for directory, count in self.scan.images_per_subset.items()
        ]
        return {
            "buckets": buckets,
            "subsets": subsets,
            "batch_size": self.batch_size,
            "batches_per_epoch": self.length.batches_per_epoch,
            "steps_per_epoch": self.length.steps_per_epoch,
            "total_steps": self.length.total_steps,
            "epochs": self.length.epochs,
            "num_images": self.num_images,
            "num_reg_images": self.num_reg_images,
            "warnings": list(self.warnings),
        }

    def format(self) -> str:
        """A human-readable table of the plan."""
        lines = ["Data plan", f"  {'folder':<40} {'images':>7} {'captions':>9} {'repeats':>8} {'× repeats':>10}"]
        for directory, count in self.scan.images_per_subset.items():
            repeats = next((r.repeats for r in self.records if r.subset.directory == directory), 0)
            captions = self.scan.captions_per_subset.get(directory, 0)
            lines.append(f"  {directory.name:<40} {count:>7} {captions:>9} {repeats:>8} {count * repeats:>10}")
        lines.append(f"  {'bucket (W×H)':<40} {'images':>7} {'× repeats':>28} {'batches':>8}")
        for (w, h), entries in self.buckets().items():
            n_images = len({self.entries[i].record for i in entries})
            batches = -(-len(entries) // self.batch_size)
            lines.append(f"  {f'{w}×{h}':<40} {n_images:>7} {len(entries):>28} {batches:>8}")
        length = self.length
        max_epochs = "none" if self.max_epochs is None else self.max_epochs
        max_steps = "none" if self.max_steps in (None, -1) else self.max_steps
        lines += [
            f"  batch size {self.batch_size}, gradient accumulation {self.accumulate_grad_batches}: "
            f"{length.batches_per_epoch} batches = {length.steps_per_epoch} optimizer steps per epoch",
            f"  training: {length.total_steps} steps over {length.epochs} epoch(s) "
            f"(trainer.max_steps={max_steps}, trainer.max_epochs={max_epochs}; whichever comes first)",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)
