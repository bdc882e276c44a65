"""Write the data plan to TensorBoard when training starts: the bucket histogram and the plan's table as text."""

from __future__ import annotations

import lightning as L
import numpy as np

from sdlora.data.plan import DataPlan


def bucket_histogram(plan: DataPlan) -> dict:
    """One histogram bin per bucket, ordered by aspect ratio w/h, counting samples with repeats.

    Arguments of TensorBoard's ``add_histogram_raw``: the bins' right edges are the buckets' aspect ratios.
    """
    rows = sorted(((w / h, len(entries)) for (w, h), entries in plan.buckets().items()), key=lambda r: r[0])
    ratios = np.array([r for r, _ in rows], dtype=np.float64)
    counts = np.array([n for _, n in rows], dtype=np.float64)
    return {
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "num": int(counts.sum()),
        "sum": float((ratios * counts).sum()),
        "sum_squares": float((ratios**2 * counts).sum()),
        "bucket_limits": ratios.tolist(),
        "bucket_counts": counts.tolist(),
    }


def bucket_table(plan: DataPlan) -> str:
    """The buckets as a Markdown table (TensorBoard's text tab renders it)."""
    lines = ["| bucket (W×H) | aspect ratio | images | samples with repeats |", "|---|---|---|---|"]
    for (w, h), entries in plan.buckets().items():
        images = len({plan.entries[i].record for i in entries})
        lines.append(f"| {w}×{h} | {w / h:.3f} | {images} | {len(entries)} |")
    return "\n".join(lines)


class LogDataPlan(L.Callback):
    """Logs ``data/buckets`` (histogram over aspect ratios), ``data/bucket_table`` and ``data/plan`` (text)."""

    def __init__(self, plan: DataPlan) -> None:
        self.plan = plan

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is None or not hasattr(experiment, "add_histogram_raw"):
                continue
            experiment.add_histogram_raw("data/buckets", global_step=0, **bucket_histogram(self.plan))
            experiment.add_text("data/bucket_table", bucket_table(self.plan), global_step=0)
            plan_text = "\n".join("    " + line for line in self.plan.format().splitlines())  # Markdown code block
            experiment.add_text("data/plan", plan_text, global_step=0)
            experiment.flush()
