"""The page's "Plan": what ``dry_run=true`` prints, without loading a model — the resolved config
(:func:`sdlora.config.resolve.resolve`) and the typed run (:func:`sdlora.assemble.assemble`): folders, repeats,
buckets, steps per epoch and total steps, a bucket histogram picture, and the memory estimate.

The memory estimate is the one ``train.py`` prints with its plan:
``sdlora.memory_run.estimate_run(config, plan, family)`` shown with its ``format()``; the panel says so when the
estimate does not know the model's architecture.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("sdlora")


@dataclass
class PlanView:
    text: str  # plan.format() plus the resolver's notes
    plan: dict[str, Any]  # plan.to_json()
    rows: list[list[Any]]  # bucket table: W×H, aspect ratio, images, with repeats, batches
    picture: Any = None  # PIL image of the bucket histogram (None without matplotlib)
    memory: str = ""
    notes: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def bucket_rows(plan: dict[str, Any]) -> list[list[Any]]:
    """One row per bucket: size, aspect ratio, images, samples with repeats, batches per epoch."""
    batch = max(1, int(plan.get("global_batch_size") or plan.get("batch_size") or 1))
    rows = []
    for bucket in plan["buckets"]:
        w, h = bucket["resolution"]
        count = bucket["count_with_repeats"]
        rows.append([f"{w}×{h}", round(w / h, 3), len(bucket["images"]), count, math.ceil(count / batch)])
    return rows


def histogram(rows: list[list[Any]]):
    """A bar per bucket (samples with repeats), in aspect-ratio order, as a PIL image; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from sdlora.ui.charts import picture

    ordered = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(ordered) + 2), 3.2), dpi=100)
    ax.bar([r[0] for r in ordered], [r[3] for r in ordered], color="#3b82f6")
    ax.set_xlabel("bucket (W×H), by aspect ratio")
    ax.set_ylabel("samples per epoch (× repeats)")
    ax.tick_params(axis="x", rotation=45 if len(ordered) > 6 else 0)
    return picture(fig)


def memory_estimate(config, run) -> str:
    """The memory estimate of the run (``sdlora.memory``), or a line saying why there is none."""
    from sdlora.memory_run import estimate_run

    try:
        memory = estimate_run(config, run.data.plan, run.family)
    except Exception as exc:  # shown, not raised: the plan itself is fine
        return f"Memory estimate failed: {type(exc).__name__}: {exc}"
    return "Memory estimate: not available for this model" if memory is None else memory.estimate.format()


def make_plan(cfg: DictConfig) -> PlanView:
    """The data plan of a composed, checked config (an :class:`~sdlora.errors.SdloraError` names any problem)."""
    from sdlora.assemble import assemble, validation_summary
    from sdlora.config.resolve import resolve

    collect = _Collect()
    log.addHandler(collect)
    try:
        config = resolve(cfg)
        with tempfile.TemporaryDirectory(prefix="sdlora-plan-") as scratch:  # nothing is written there
            run = assemble(config, scratch, hash_model=False)
            plan = run.data.plan
            record = plan.to_json()
            validation = validation_summary(run)["text"]
            memory = memory_estimate(config, run)
    finally:
        log.removeHandler(collect)
    rows = bucket_rows(record)
    text = f"{plan.format()}\n  validation: {validation}"
    return PlanView(text, record, rows, histogram(rows), memory, collect.lines)
