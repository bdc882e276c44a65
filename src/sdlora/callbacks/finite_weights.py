"""NaN never reaches a file: the LoRA weights are checked after optimizer steps.

An optimizer step can leave NaN or infinite weights while the loss is still finite (an ``optimizer.eps`` of 0 divides
by zero wherever a gradient is 0; a learning rate that is too high overflows). Every file writer refuses non-finite
tensors (:func:`sdlora.network.io.check_finite`); this callback finds them earlier:

- every ``trainer.check_finite_every_n_steps`` optimizer steps (null: every step with ``trainer.skip_nonfinite``,
  else never — the writers' check alone), one fused ``isfinite`` pass over the LoRA parameters;
- a failed check stops the run (:class:`~sdlora.errors.NonFiniteWeights`, naming the step; the last good training
  state is named by :class:`~sdlora.callbacks.save_state.TrainingStates`), or with ``trainer.skip_nonfinite`` puts
  back the weights and optimizer state of the last good check and counts the steps since as skipped.
"""

from __future__ import annotations

import copy
import logging

import lightning as L
import torch

from sdlora.callbacks.steps import OptimizerSteps
from sdlora.errors import NonFiniteWeights
from sdlora.network.io import NONFINITE_CAUSES, all_finite

log = logging.getLogger("sdlora")


class FiniteWeights(L.Callback):
    def __init__(self, every_n_steps: int | None, roll_back: bool, accumulate_grad_batches: int = 1) -> None:
        self.every = every_n_steps if every_n_steps is not None else (1 if roll_back else None)
        self.roll_back = roll_back
        self.accumulate = accumulate_grad_batches
        self._steps = OptimizerSteps()
        self._good: tuple[int, list[torch.Tensor], dict] | None = None  # step, weights, optimizer state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        if self.every and self.roll_back:
            self._snapshot(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer) or not self.every or trainer.global_step % self.every:
            return
        params = list(pl_module.network.trainable_parameters())
        if all_finite(params):
            if self.roll_back:
                self._snapshot(trainer, pl_module)
            return
        step = trainer.global_step
        if not self.roll_back or self._good is None:
            raise NonFiniteWeights(
                f"after optimizer step {step} the LoRA weights hold NaN or infinite values; {NONFINITE_CAUSES}. "
                "trainer.skip_nonfinite=true rolls such steps back instead of stopping"
            )
        good_step, weights, optimizer_state = self._good
        with torch.no_grad():
            for param, value in zip(params, weights, strict=True):
                param.copy_(value)
        trainer.optimizers[0].load_state_dict(copy.deepcopy(optimizer_state))
        lost = step - good_step
        pl_module.count_skipped(lost * self.accumulate)
        log.warning("trainer.skip_nonfinite: the LoRA weights held NaN/inf after step %d; rolled back to step %d "
                    "(%d step(s) skipped)", step, good_step, lost)  # fmt: skip

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = [p.detach().clone() for p in pl_module.network.trainable_parameters()]
        self._good = (trainer.global_step, weights, copy.deepcopy(trainer.optimizers[0].state_dict()))
