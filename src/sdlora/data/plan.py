"""The data plan: what training will see, printed and written to ``data_plan.json`` before the first step.

JSON format (docs/design.md §3): ``{"buckets": [{"resolution": [W, H], "count_with_repeats": n, "images": [{"path": abs,
"repeats": r}]}], "steps_per_epoch": S, "total_steps": T, "num_images": n, "num_reg_images": m, "warnings": [...]}``
plus ``subsets``, ``bucketing``, ``regularisation``, ``batch_size``, ``world_size`` (processes), ``global_batch_size``
(batch_size × world_size), ``batches_per_epoch`` and ``epochs``. With several processes a batch is a global batch:
steps per epoch = Σ_buckets ⌈n_b / global_batch_size⌉, the same on every process.
``num_images`` counts distinct training image files (``num_reg_images`` regularisation ones); ``count_with_repeats``
counts entries, i.e. images × repeats (regularisation images with their balanced repeats).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter

from sdlora.data.buckets import BucketSpec, Placement
from sdlora.data.dataset import Entry, group_by_bucket
from sdlora.data.records import ImageRecord, ScanResult
from sdlora.data.regularisation import RegBalance
from sdlora.data.steps import TrainingLength

_RECORD = attrgetter("record")


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
    placements: list[Placement] | None = None  # per record
    spec: BucketSpec | None = None
    bucket_list: list[tuple[int, int]] | None = None  # kohya's predefined bucket list (None: made from the images)
    reg: RegBalance | None = None
    repeats: list[int] | None = None  # per record, after regularisation balancing
    world_size: int = 1  # processes sharing each global batch (trainer=ddp)
    bucket_index: dict[tuple[int, int], list[int]] | None = None  # group_by_bucket(entries), computed when None

    def __post_init__(self) -> None:
        if self.repeats is None:
            counts = Counter(e.record for e in self.entries)
            self.repeats = [counts.get(i, 0) for i in range(len(self.records))]

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all processes: data.batch_size × world size."""
        return self.batch_size * self.world_size

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        """Bucket resolution → entry indices, in sorted resolution order (computed once; the entries never change)."""
        if self.bucket_index is None:
            self.bucket_index = group_by_bucket(self.entries)
        return self.bucket_index

    def records_of(self, indices: list[int]) -> Counter:
        """Record index → how many of the entries ``indices`` hold it (one C-level pass)."""
        return Counter(map(_RECORD, map(self.entries.__getitem__, indices)))

    @property
    def num_images(self) -> int:
        return sum(not r.subset.is_reg for r in self.records)

    @property
    def num_reg_images(self) -> int:
        return sum(r.subset.is_reg for r in self.records)

    @property
    def num_train_images_with_repeats(self) -> int:
        """kohya's num_train_images: Σ training images × repeats."""
        return sum(n for r, n in zip(self.records, self.repeats, strict=True) if not r.subset.is_reg)

    def mean_ar_error(self) -> float:
        """Mean |aspect-ratio error| of the used images, without repeats (kohya's mean_img_ar_error)."""
        if not self.placements:
            return 0.0
        errors = [abs(p.ar_error) for p, n in zip(self.placements, self.repeats, strict=True) if n > 0]
        return sum(errors) / len(errors) if errors else 0.0

    def bucket_info(self) -> dict:
        """kohya's ``ss_bucket_info``: {"buckets": {index: {"resolution": [W, H], "count": n}}, "mean_img_ar_error"}.

        The index is the bucket's position in kohya's sorted bucket list (only non-empty buckets are listed).
        """
        buckets = self.buckets()
        resolutions = self.bucket_list or list(buckets)
        info = {
            str(i): {"resolution": list(res), "count": len(buckets[res])}
            for i, res in enumerate(resolutions)
            if res in buckets
        }
        return {"buckets": info, "mean_img_ar_error": self.mean_ar_error()}

    def subset_rows(self) -> list[dict]:
        rows = []
        used = Counter()
        for record, n in zip(self.records, self.repeats, strict=True):
            used[record.subset.directory] += n > 0
        for subset in self.scan.subsets:
            count = self.scan.images_per_subset.get(subset.directory, 0)
            rows.append(
                {
                    "path": str(subset.directory),
                    "images": count,
                    "caption_files": self.scan.captions_per_subset.get(subset.directory, 0),
                    "repeats": subset.repeats,
                    "class_tokens": subset.class_tokens,
                    "is_reg": subset.is_reg,
                    "images_used": used[subset.directory],
                }
            )
        return rows

    def to_json(self) -> dict:
        buckets = []
        for resolution, entries in self.buckets().items():
            per_record = self.records_of(entries)
            images = [{"path": str(self.records[r].path), "repeats": n} for r, n in sorted(per_record.items())]
            buckets.append({"resolution": list(resolution), "count_with_repeats": len(entries), "images": images})
        out = {
            "buckets": buckets,
            "subsets": self.subset_rows(),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "global_batch_size": self.global_batch_size,
            "batches_per_epoch": self.length.batches_per_epoch,
            "steps_per_epoch": self.length.steps_per_epoch,
            "total_steps": self.length.total_steps,
            "epochs": self.length.epochs,
            "num_images": self.num_images,
            "num_reg_images": self.num_reg_images,
        }
        if self.spec is not None:
            out["bucketing"] = {
                "enabled": self.spec.enabled,
                "resolution": list(self.spec.resolution),
                "min_bucket_reso": self.spec.min_reso,
                "max_bucket_reso": self.spec.max_reso,
                "bucket_reso_steps": self.spec.steps,
                "bucket_no_upscale": self.spec.no_upscale,
                "mean_ar_error": self.mean_ar_error(),
            }
        if self.reg is not None:
            out["regularisation"] = self.reg.to_json()
        out["warnings"] = list(self.warnings)
        return out

    def format(self) -> str:
        """A human-readable table of the plan."""
        from sdlora.data.plan_text import format_plan

        return format_plan(self)
