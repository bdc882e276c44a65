"""Training and evaluation modes of a schedule-free optimizer (:mod:`sdlora.optim.schedule_free`).

- ``optimizer.train()`` before the first step (schedulefree's optimizers start in evaluation mode);
- validation at the evaluation point (``optimizer.eval()`` … ``train()``); sample images, LoRA files and training
  states enter it themselves (:func:`sdlora.optim.schedule_free.evaluation_point`);
- a training state is written at the evaluation point (its LoRA is x, what the LoRA files hold); this callback's
  part of the state is y, the training-mode parameters, so that a resumed run continues from y exactly: after the
  optimizer state is back, ``train()`` and then y;
- after the last step the parameters stay at x, so the final validation evaluates the saved LoRA.

Only in the callback list when the optimizer is schedule-free; first in it, so that it acts before sample images at
the start.
"""

from __future__ import annotations

import contextlib
from typing import Any

import lightning as L

from sdlora.optim.schedule_free import evaluation_point, has_training_mode, to_training, train_point


class ScheduleFreeMode(L.Callback):
    def __init__(self) -> None:
        self._loaded: list[list[Any] | None] | None = None  # y of each optimizer from a training state
        self._validation = contextlib.ExitStack()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaded = self._loaded or []
        for i, optimizer in enumerate(_schedule_free(trainer)):
            to_training(optimizer, loaded[i] if i < len(loaded) else None)
        self._loaded = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in _schedule_free(trainer):
            optimizer.eval()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation.enter_context(evaluation_point(trainer.optimizers))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation.close()

    def state_dict(self) -> dict[str, Any]:
        return {"train_points": self._train_points}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        points = state_dict.get("train_points") or []
        self._loaded = points if any(p is not None for p in points) else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    @property
    def _train_points(self) -> list[list[Any] | None]:
        trainer = getattr(self, "_trainer", None)
        return [train_point(o) for o in _schedule_free(trainer)] if trainer is not None else []


def _schedule_free(trainer: L.Trainer | None) -> list[Any]:
    return [o for o in getattr(trainer, "optimizers", []) if has_training_mode(o)]
