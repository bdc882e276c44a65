"""Max-norm regularisation after every optimizer step [kohya: scale_weight_norms] (docs/kohya.md §3).

Runs once per real optimizer update — detected by ``trainer.global_step`` advancing — so gradient-accumulation
micro-steps, where nothing changed, are skipped (kohya also runs it on those, harmlessly). Logs kohya's statistics
``max_norm/keys_scaled``, ``max_norm/average_key_norm`` and ``max_norm/max_key_norm`` to the loggers, the first two
also to the progress bar.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from sdlora.callbacks.steps import OptimizerSteps


class MaxNormRegularization(L.Callback):
    def __init__(self, max_norm: float) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self._steps = OptimizerSteps()
        self.last_stats: tuple[int, float, float] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._steps.stepped(trainer):
            return  # an accumulation micro-step: no update happened
        keys_scaled, average, maximum = pl_module.network.apply_max_norm(self.max_norm)
        self.last_stats = (keys_scaled, average, maximum)
        log = dict(on_step=True, on_epoch=False, batch_size=1)
        pl_module.log("max_norm/keys_scaled", float(keys_scaled), prog_bar=True, **log)
        pl_module.log("max_norm/average_key_norm", average, prog_bar=True, **log)
        pl_module.log("max_norm/max_key_norm", maximum, **log)
