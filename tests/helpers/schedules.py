"""Learning-rate schedules as lists of numbers, for comparing sdlora's schedules with the reference ones."""

from __future__ import annotations

import torch


def sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    """A one-parameter SGD optimizer to hang a schedule on."""
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def scheduled_lrs(scheduler, steps: int) -> list[float]:
    """The lr in effect for optimizer steps 0..steps−1 (the scheduler is stepped after every optimizer step)."""
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out
