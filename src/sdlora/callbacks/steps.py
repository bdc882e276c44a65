"""Did the batch that just ended complete an optimizer step? (One helper for every callback that acts per step.)

With gradient accumulation, several batches make one optimizer step, and a skipped batch
(``trainer.skip_nonfinite``) may make none; the step happened exactly when ``trainer.global_step`` advanced.
"""

from __future__ import annotations

from typing import Any


class OptimizerSteps:
    """Per-callback tracker: call :meth:`start` at ``on_train_start`` and :meth:`stepped` at ``on_train_batch_end``."""

    def __init__(self) -> None:
        self._last: int | None = None

    def start(self, trainer: Any) -> None:
        self._last = trainer.global_step

    def stepped(self, trainer: Any) -> bool:
        """True once per optimizer step, at the end of the batch that completed it."""
        if trainer.global_step == self._last:
            return False
        self._last = trainer.global_step
        return True
