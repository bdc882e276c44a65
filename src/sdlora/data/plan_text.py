"""The data plan as the table printed before training (see :mod:`sdlora.data.plan`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdlora.data.plan import DataPlan


def _folders(plan: DataPlan) -> list[str]:
    lines = [f"  {'folder':<40} {'images':>7} {'captions':>9} {'repeats':>8} {'× repeats':>10}  class tokens"]
    with_repeats: Counter = Counter()
    for record, n in zip(plan.records, plan.repeats, strict=True):
        with_repeats[str(record.subset.directory)] += n
    for row in plan.subset_rows():
        name = ("[reg] " if row["is_reg"] else "") + Path(row["path"]).name
        repeats = with_repeats[row["path"]]
        lines.append(
            f"  {name[:40]:<40} {row['images']:>7} {row['caption_files']:>9} {row['repeats']:>8} {repeats:>10}  "
            f"{row['class_tokens']}"
        )
    return lines


def _buckets(plan: DataPlan) -> list[str]:
    lines = [f"  {'bucket (W×H)':<40} {'images':>7} {'× repeats':>28} {'batches':>8}"]
    for (w, h), entries in plan.buckets().items():
        n_images = len(plan.records_of(entries))
        batches = -(-len(entries) // plan.global_batch_size)
        lines.append(f"  {f'{w}×{h}':<40} {n_images:>7} {len(entries):>28} {batches:>8}")
    spec = plan.spec
    if spec is None:
        return lines
    w, h = spec.resolution
    if not spec.enabled:
        lines.append(f"  buckets off (data.enable_bucket=false): every image is scaled to cover {w}×{h} and cropped")
    elif spec.no_upscale:
        lines.append(
            f"  buckets from the image sizes, area ≤ {w}×{h}, sides in steps of {spec.steps} px, never upscaled "
            f"(data.bucket_no_upscale; min/max_bucket_reso ignored); mean aspect-ratio error {plan.mean_ar_error():.4f}"
        )
    else:
        lines.append(
            f"  aspect-ratio buckets of area ≤ {w}×{h}, sides {spec.min_reso}–{spec.max_reso} px in steps of "
            f"{spec.steps}; mean aspect-ratio error {plan.mean_ar_error():.4f}"
        )
    return lines


def format_plan(plan: DataPlan) -> str:
    lines = ["Data plan", *_folders(plan), *_buckets(plan)]
    if plan.reg is not None and plan.reg.images:
        lines.append(f"  regularisation: {plan.reg.describe()}")
    length = plan.length
    max_epochs = "none" if plan.max_epochs is None else plan.max_epochs
    max_steps = "none" if plan.max_steps in (None, -1) else plan.max_steps
    batch = f"batch size {plan.batch_size}"
    if plan.world_size > 1:
        batch += f" × {plan.world_size} processes = global batch {plan.global_batch_size}"
    lines += [
        f"  {batch}, gradient accumulation {plan.accumulate_grad_batches}: "
        f"{length.batches_per_epoch} batches = {length.steps_per_epoch} optimizer steps per epoch",
        f"  training: {length.total_steps} steps over {length.epochs} epoch(s) "
        f"(trainer.max_steps={max_steps}, trainer.max_epochs={max_epochs}; whichever comes first)",
    ]
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
