"""Ctrl-C that stops training after the current optimizer step, with a saved state (``save.state=true``).

The first SIGINT only sets a flag; at the end of the batch that completes the next optimizer step this callback
sets :attr:`GracefulStop.stopping` and asks the trainer to stop, and the saving callbacks (which run after it) write
``<name>-step<N>`` and its state. A second SIGINT raises ``KeyboardInterrupt`` at once (no state). The handler is
installed only in the main thread and removed when training ends.
"""

from __future__ import annotations

import logging
import signal
import threading

import lightning as L

from sdlora.callbacks.steps import OptimizerSteps

log = logging.getLogger("sdlora")


class GracefulInterrupt:
    """The SIGINT handler: first signal → :attr:`requested`, second → ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGINT, self._handle)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this optimizer step with a saved state (Ctrl-C again stops at once)")


class GracefulStop(L.Callback):
    """Turns a requested stop into the end of training after an optimizer step (place it before the savers)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stopping = False  # set at the end of the step the run stops after; the savers read it
        self._interrupt = GracefulInterrupt()
        self._steps = OptimizerSteps()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        if self.enabled and not trainer.fast_dev_run:
            self._interrupt.install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer):
            return
        if self._interrupt.requested and trainer.global_step < trainer.max_steps:
            self.stopping = True
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._interrupt.uninstall()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._interrupt.uninstall()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._interrupt.uninstall()
