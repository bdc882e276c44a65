"""A signal during training stops the run after the current optimizer step (:mod:`sdlora.signals`).

At the end of the batch that completes an optimizer step, this callback looks whether a stop was requested — by this
process or, under several processes, by any of them (one all-reduce of a flag, so that every process stops after the
same step) — and if so sets :attr:`GracefulStop.stopping` and asks the trainer to stop. The saving callbacks, which
run after it, then write ``<name>-step<N>`` and its state (without ``save.state``: ``<name>-interrupted``).
"""

from __future__ import annotations

import logging
import signal

import lightning as L

from sdlora.callbacks.steps import OptimizerSteps
from sdlora.results import RunResults
from sdlora.signals import StopSignals

log = logging.getLogger("sdlora")


class _DropFitStopped(logging.Filter):
    """Lightning logs "`Trainer.fit` stopped: `max_epochs=…` reached" also when a signal stopped the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`Trainer.fit` stopped")


class GracefulStop(L.Callback):
    """Turns a requested stop into the end of training after an optimizer step (place it before the savers)."""

    def __init__(self, signals: StopSignals, results: RunResults) -> None:
        self.signals = signals
        self.results = results
        self.stopping = False  # set at the end of the step the run stops after; the savers read it
        self.stop_signal: int | None = None
        self._steps = OptimizerSteps()
        self._quiet = _DropFitStopped()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.stop_signal).name if self.stop_signal else "a signal"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        if not trainer.fast_dev_run:
            self.signals.install()  # Lightning replaced the SIGTERM handler when fit started
            self.signals.graceful = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer) or self.stopping:
            return
        requested = self.signals.requested is not None
        if trainer.world_size > 1:  # every process stops after the same step
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        if requested and trainer.global_step < trainer.max_steps:
            self.stopping = True
            self.stop_signal = self.signals.requested or int(signal.SIGTERM)  # another process got the signal
            self.results.stopped_by = self.stop_signal
            trainer.should_stop = True
            logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(self._quiet)

    def _leave_training(self) -> None:
        self.signals.graceful = False
        logging.getLogger("lightning.pytorch.utilities.rank_zero").removeFilter(self._quiet)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._leave_training()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._leave_training()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._leave_training()
