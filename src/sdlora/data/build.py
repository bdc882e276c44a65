"""From ``cfg.data`` to a data plan, a dataset and a bucket batch sampler (no model needed).

folders (train, reg, data.subsets) → scan images and captions → buckets → regularisation balance → entries
(image × repeats) → bucket batch sampler → training length → data plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sdlora.config.schema import DataConfig
from sdlora.data.buckets import BucketAssigner, BucketSpec, Placement, is_upscaled
from sdlora.data.dataset import Entry, LoRADataset, group_by_bucket
from sdlora.data.held_out import hold_out
from sdlora.data.masks import MaskSource, mask_warnings
from sdlora.data.plan import DataPlan
from sdlora.data.records import ImageRecord, ScanResult, scan_records
from sdlora.data.regularisation import RegBalance, balance_regularisation
from sdlora.data.sampler import BucketBatchSampler
from sdlora.data.steps import training_length
from sdlora.data.subsets import resolve_subsets
from sdlora.errors import SdloraError


@dataclass
class TrainingData:
    plan: DataPlan
    dataset: LoRADataset
    sampler: BucketBatchSampler
    held_out: list[ImageRecord] = field(default_factory=list)  # validation.split images, not trained on


def bucket_spec(data: DataConfig, resolution: tuple[int, int]) -> BucketSpec:
    """The run's bucket options (``data.min/max_bucket_reso`` as resolved: null takes the model family's)."""
    if data.min_bucket_reso is None or data.max_bucket_reso is None:
        raise ValueError("data.min_bucket_reso / max_bucket_reso are null: resolve the config first")
    return BucketSpec(
        enabled=data.enable_bucket,
        resolution=tuple(resolution),
        min_reso=data.min_bucket_reso,
        max_reso=data.max_bucket_reso,
        steps=data.bucket_reso_steps,
        no_upscale=data.bucket_no_upscale,
    )


def build_training_data(
    data: DataConfig,
    resolution: tuple[int, int],
    seed: int,
    accumulate_grad_batches: int = 1,
    max_steps: int = -1,
    max_epochs: int | None = None,
    *,
    prior_loss_weight: float = 1.0,
    validation_split: float = 0.0,
    validation_seed: int = 0,
    world_size: int = 1,
    masked: bool = False,
) -> TrainingData:
    """Scan the image folders, place every image in a bucket, balance regularisation images, plan the run.

    With ``validation_split`` > 0 that fraction of the training images is held out (``TrainingData.held_out``).
    ``world_size``: processes sharing each global batch of ``batch_size × world_size`` (``trainer=ddp``).
    ``masked`` (``loss.masked``): samples carry their mask (``data.mask_dir`` files, else the alpha channel) and the
    plan warns about images that have none.
    """
    subsets, warnings = resolve_subsets(data)
    scan = scan_records(subsets, None, data.strict, min(8, os.cpu_count() or 1), data.max_caption_bytes)
    held_out: list[ImageRecord] = []
    if validation_split > 0:
        scan, held_out = hold_out(scan, validation_split, validation_seed)
    training = plan_training_data(
        scan,
        bucket_spec(data, resolution),
        data.batch_size,
        seed,
        accumulate_grad_batches,
        max_steps,
        max_epochs,
        strict=data.strict,
        warnings=warnings,
        prior_loss_weight=prior_loss_weight,
        source=f"data.train_dir={data.train_dir!r}" if data.train_dir else "data.subsets",
        world_size=world_size,
        masks=MaskSource(data.mask_dir) if masked else None,
    )
    training.held_out = held_out
    return training


def plan_training_data(
    scan: ScanResult,
    spec: BucketSpec,
    batch_size: int,
    seed: int,
    accumulate_grad_batches: int,
    max_steps: int,
    max_epochs: int | None,
    *,
    strict: bool = False,
    warnings: list[str] | None = None,
    prior_loss_weight: float = 1.0,
    source: str = "data.train_dir",
    world_size: int = 1,
    masks: MaskSource | None = None,
) -> TrainingData:
    """From scanned images (sizes, captions) to buckets, repeats, entries, sampler, training length and plan."""
    warnings = list(warnings or [])
    assigner = BucketAssigner(spec)
    scan, placements = _place(scan, assigner, strict, warnings)
    records = scan.records
    if not any(not r.subset.is_reg for r in records):
        raise SdloraError(_no_images_message(source, scan.subsets, [*scan.warnings, *warnings]))
    repeats, reg = _repeats(records)
    entries: list[Entry] = []
    for i, n in enumerate(repeats):
        if n:
            entries += [Entry(i, placements[i].bucket)] * n  # one (immutable) entry object per image
    table = group_by_bucket(entries)
    sampler = BucketBatchSampler(list(table.values()), batch_size, seed, num_replicas=world_size)
    length = training_length(len(sampler), accumulate_grad_batches, max_steps, max_epochs)
    plan = DataPlan(
        records,
        entries,
        scan,
        batch_size,
        accumulate_grad_batches,
        length,
        max_steps,
        max_epochs,
        warnings=warnings + scan.warnings,
        placements=placements,
        spec=spec,
        bucket_list=assigner.resolutions if spec.enabled else None,
        reg=reg,
        repeats=repeats,
        world_size=world_size,
        bucket_index=table,
    )
    plan.warnings += _plan_warnings(plan)
    if masks is not None:
        plan.warnings += mask_warnings(masks, [r.path for r, n in zip(records, repeats, strict=True) if n > 0])
    dataset = LoRADataset(records, entries, seed, placements=placements, prior_loss_weight=prior_loss_weight,
                          masks=masks)  # fmt: skip
    return TrainingData(plan, dataset, sampler)


def _place(
    scan: ScanResult, assigner: BucketAssigner, strict: bool, warnings: list[str]
) -> tuple[ScanResult, list[Placement]]:
    """Bucket every record; images too small for any bucket (``bucket_no_upscale``) are skipped (the returned scan
    no longer holds them) or an error."""
    skipped, placements = [], []
    steps = assigner.spec.steps
    for record in scan.records:
        placement = assigner.select(record.size)
        if placement is None:
            w, h = record.size
            problem = (
                f"{record.path}: {w}x{h} px is smaller than the smallest bucket with data.bucket_no_upscale=true "
                f"(each side needs ≥ data.bucket_reso_steps={steps} px)"
            )
            if strict:
                raise SdloraError(f"{problem} (data.strict=true; remove the file or set data.strict=false)")
            warnings.append(f"skipped {problem}")
            skipped.append(record)
            continue
        placements.append(placement)
    return (scan.without(skipped) if skipped else scan), placements


def _repeats(records: list[ImageRecord]) -> tuple[list[int], RegBalance]:
    """Repeats per record: the folder's for training images, kohya's balance for regularisation images."""
    repeats = [0 if r.subset.is_reg else r.repeats for r in records]
    target = sum(repeats)
    reg_index = [i for i, r in enumerate(records) if r.subset.is_reg]
    balanced = balance_regularisation(target, [records[i].repeats for i in reg_index])
    for i, n in zip(reg_index, balanced, strict=True):
        repeats[i] = n
    reg = RegBalance(
        target=target,
        images=len(reg_index),
        images_used=sum(n > 0 for n in balanced),
        requested=sum(records[i].repeats for i in reg_index),
        count_with_repeats=sum(balanced),
    )
    return repeats, reg


def _no_images_message(source: str, subsets: list, warnings: list[str]) -> str:
    """No training image is left: every image file was skipped (say why), or there were none where kohya looks."""
    found = ", ".join(s.name for s in subsets if not s.is_reg)
    skipped = [w.removeprefix("skipped ") for w in warnings if w.startswith("skipped ")]
    if skipped:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        return (
            f"{source} has no usable images in its folders ({found}): all {len(skipped)} image file(s) were "
            f"skipped as unreadable or unusable — {'; '.join(skipped[:3])}{more}"
        )
    return (
        f"{source} has no usable images in its folders ({found}); images must be .png/.jpg/.jpeg/.webp/.bmp files "
        "directly inside a '<repeats>_<name>' folder (e.g. 10_mysubject/001.png)"
    )


def _plan_warnings(plan: DataPlan) -> list[str]:
    """Tiny buckets (every batch of them is short) and images upscaled to fit their bucket."""
    warnings = []
    if plan.global_batch_size > 1:
        for (w, h), indices in plan.buckets().items():
            if len(indices) < plan.global_batch_size:
                warnings.append(
                    f"bucket {w}×{h} holds only {len(indices)} sample(s) with repeats, fewer than "
                    f"{_batch_words(plan)}: its batches are smaller"
                )
    used = [i for i, n in enumerate(plan.repeats) if n > 0]
    upscaled = [i for i in used if is_upscaled(plan.records[i].size, plan.placements[i])]
    if upscaled:
        shown = ", ".join(
            f"{plan.records[i].path.name} ({plan.records[i].size[0]}×{plan.records[i].size[1]} → "
            f"{plan.placements[i].bucket[0]}×{plan.placements[i].bucket[1]})"
            for i in upscaled[:5]
        )
        more = f" and {len(upscaled) - 5} more" if len(upscaled) > 5 else ""
        warnings.append(
            f"{len(upscaled)} image(s) are smaller than their bucket and are upscaled: {shown}{more} "
            "(data.bucket_no_upscale=true keeps them at their size)"
        )
    return warnings


def _batch_words(plan: DataPlan) -> str:
    if plan.world_size == 1:
        return f"data.batch_size={plan.batch_size}"
    processes = f"data.batch_size={plan.batch_size} × {plan.world_size} processes"
    return f"the global batch of {plan.global_batch_size} ({processes})"
