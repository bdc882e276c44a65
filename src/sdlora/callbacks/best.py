"""The best LoRA so far (``save.best_by=val/loss`` or ``val/loss_ema``): one job — whenever validation has run and
its value is the lowest so far, write the LoRA it was computed with as ``<name>-best.<ext>``.

The file is written like every LoRA file (atomically: a temporary name renamed into place; kohya keys and metadata)
with ``ss_best_step``, ``ss_best_metric`` and ``ss_best_value`` added; for ``val/loss_ema`` it holds the EMA weights,
for a schedule-free optimizer its evaluation point. It is not one of the step/epoch saves (no retention); the run
record and the sweep summary name it. The best value is part of training states: a resumed run keeps it and copies
the resumed run's best file into its own folder until it finds a better one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from sdlora.optim.schedule_free import evaluation_point
from sdlora.results import BestLoRAFile, RunResults

log = logging.getLogger("sdlora")


class BestLoRA(L.Callback):
    def __init__(
        self,
        files: Any,  # SaveLoRAFiles: the writer (metadata, format, dtype)
        results: RunResults,
        metric: str,
        history: Callable[[Any], list[tuple[int, float]]],
        weights: Callable[[Any], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.files = files
        self.results = results
        self.metric = metric
        self.history = history  # pl_module → (step, value) of every evaluation of the metric, in order
        self.weights = weights  # puts the evaluated weights into the network (the EMA's), if not the trained ones
        self.name = f"{files.schedule.output_name}-best"
        self.best: tuple[int, float] | None = None
        self._loaded_path: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous, self._loaded_path = self._loaded_path, None
        if previous is None or not trainer.is_global_zero or self.best is None:
            return
        target = self.files.run_dir / f"{self.name}{self.files.suffix}"
        if previous.is_file() and previous.resolve() != target.resolve():
            shutil.copy2(previous, target)
            self.results.best = BestLoRAFile(target, self.best[0], self.metric, self.best[1])
            log.info("Copied the best LoRA so far (%s %.6g, step %d) from %s", self.metric, self.best[1],
                     self.best[0], previous)  # fmt: skip

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = self.history(pl_module)
        if not history or trainer.fast_dev_run:
            return
        step, value = history[-1]
        if not math.isfinite(value) or (self.best is not None and value >= self.best[1]):
            return
        self.best = (step, value)
        if not trainer.is_global_zero:
            return
        network = pl_module.network
        extra = {"ss_best_step": str(step), "ss_best_metric": self.metric, "ss_best_value": repr(value)}
        with evaluation_point(trainer.optimizers), (self.weights or _unchanged)(network):
            path = self.files.save_single(network, pl_module.components.prediction_type, self.name, step,
                                          trainer.current_epoch, extra)  # fmt: skip
        self.results.best = BestLoRAFile(path, step, self.metric, value)
        log.info("Best %s so far: %.6g at step %d → %s", self.metric, value, step, path.name)

    def state_dict(self) -> dict[str, Any]:
        best = self.results.best
        return {"best": self.best, "path": str(best.path) if best is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        self.best = (int(best[0]), float(best[1])) if best else None
        self._loaded_path = Path(state_dict["path"]) if state_dict.get("path") else None


def _unchanged(network: Any) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()
