"""Learning-rate schedules [kohya: --lr_scheduler, --lr_warmup_steps] as pure multiplier functions.

Each ``*_factor(step, …)`` gives the multiplier of the base lr after ``step`` optimizer steps (the schedule is
stepped once per optimizer step, so accumulation micro-steps do not advance it); the factories wrap them in a
``LambdaLR`` and are what ``conf/scheduler/*.yaml`` point at with ``_partial_: true``. The run supplies
``total_steps``: the real number of optimizer steps of the run. The formulas are those of diffusers/transformers'
schedulers, which kohya uses.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 0: step / warmup_steps while step < warmup_steps, else 1."""
    return step / max(1, warmup_steps) if step < warmup_steps else 1.0


def constant_factor(step: int) -> float:
    """1 at every step."""
    return 1.0


def constant_with_warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up, then 1."""
    return warmup_factor(step, warmup_steps)


def linear_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then max(0, (total − step) / (total − warmup)): lr reaches 0 at the last step."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then ½·(1 + cos(π·p)) with p = (step − warmup) / (total − warmup): half a cosine to 0."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _check_warmup(warmup_steps: int, total_steps: int) -> None:
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps must be ≥ 0, got {warmup_steps}")


def constant(optimizer: Optimizer, total_steps: int) -> LambdaLR:
    """[kohya: constant]."""
    return LambdaLR(optimizer, constant_factor)


def constant_with_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """[kohya: constant_with_warmup]."""
    _check_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, partial(constant_with_warmup_factor, warmup_steps=warmup_steps))


def linear(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """[kohya: linear]."""
    _check_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, partial(linear_factor, total_steps=total_steps, warmup_steps=warmup_steps))


def cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """[kohya: cosine]."""
    _check_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, partial(cosine_factor, total_steps=total_steps, warmup_steps=warmup_steps))
