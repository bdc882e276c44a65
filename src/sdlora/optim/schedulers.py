"""Learning-rate schedules [kohya: --lr_scheduler, --lr_warmup_steps, --lr_scheduler_num_cycles, --lr_scheduler_power,
--lr_scheduler_min_lr_ratio, --lr_decay_steps] as pure multiplier functions.

Each ``*_factor(step, …)`` gives the multiplier of the base lr after ``step`` optimizer steps (the schedule is
stepped once per optimizer step, so accumulation micro-steps do not advance it); the factories wrap them in a
``LambdaLR`` and are what ``conf/scheduler/*.yaml`` point at with ``_partial_: true``. The run supplies
``total_steps``: the real number of optimizer steps of the whole run (a resumed run passes the same number, so the
horizon does not move). The formulas are those of the diffusers/transformers schedulers kohya uses; the tests compare
them with those implementations.

``warmup_steps`` (and ``decay_steps``) take an int (optimizer steps) or a float < 1 (a fraction of ``total_steps``,
rounded down as current sd-scripts does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a schedule is built for training (docs/design.md §7)
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LambdaLR

RAMPS = ("linear", "cosine", "1-sqrt")  # warm-up / decay shapes of warmup_stable_decay


def resolve_steps(value: int | float, total_steps: int, option: str = "scheduler.warmup_steps") -> int:
    """An int number of steps, or a fraction 0 ≤ f < 1 of ``total_steps`` → ⌊f · total_steps⌋ [kohya int_or_float]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{option} must be an int or a fraction < 1 of the total steps, got {value!r}")
    if value < 0:
        raise ValueError(f"{option} must be ≥ 0, got {value}")
    if isinstance(value, float) and value < 1:
        return int(value * total_steps)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{option}={value}: a float must be < 1 (a fraction of the total steps) or a whole number")
    return int(value)


# --- pure multipliers -------------------------------------------------------------------------------------------------


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 0: step / warmup_steps while step < warmup_steps, else 1."""
    return step / max(1, warmup_steps) if step < warmup_steps else 1.0


def _progress(step: int, total_steps: int, warmup_steps: int) -> float:
    """p = (step − warmup) / (total − warmup): 0 right after the warm-up, 1 at the last step."""
    return (step - warmup_steps) / max(1, total_steps - warmup_steps)


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
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * _progress(step, total_steps, warmup_steps))))


def cosine_with_restarts_factor(step: int, total_steps: int, warmup_steps: int, num_cycles: int) -> float:
    """Linear warm-up, then ``num_cycles`` half cosines from 1 to 0, each restarting at 1 (hard restarts):
    ½·(1 + cos(π·((n·p) mod 1))) for p < 1, and 0 from the last step on [kohya: cosine_with_restarts,
    lr_scheduler_num_cycles]."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = _progress(step, total_steps, warmup_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def polynomial_factor(step: int, total_steps: int, warmup_steps: int, power: float, end_ratio: float) -> float:
    """Linear warm-up, then (1 − r)·(1 − p)^power + r, with r = lr_end / lr; r after the last step
    [kohya: polynomial, lr_scheduler_power; diffusers' lr_end = 1e-7]."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    if step > total_steps:
        return end_ratio
    remaining = 1.0 - _progress(step, total_steps, warmup_steps)
    return (1.0 - end_ratio) * remaining**power + end_ratio


def cosine_with_min_lr_factor(
    step: int, total_steps: int, warmup_steps: int, num_cycles: float, min_lr_ratio: float
) -> float:
    """Linear warm-up, then r + (1 − r)·½·(1 + cos(2π·c·p)) with r = min_lr_ratio [kohya: cosine_with_min_lr,
    lr_scheduler_min_lr_ratio]. ``num_cycles`` is c, transformers' count of full cosine waves: kohya passes half its
    lr_scheduler_num_cycles, so its default 1 gives c = ½, one half cosine from 1 down to r."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(2.0 * math.pi * num_cycles * _progress(step, total_steps, warmup_steps)))
    return max(0.0, cosine * (1.0 - min_lr_ratio) + min_lr_ratio)


def _ramp(shape: str, progress: float) -> float:
    """A rise from 0 to 1 over progress 0 → 1: linear p, cosine ½(1 − cos πp), or 1-sqrt 1 − √(1 − p)."""
    if shape == "linear":
        return progress
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * progress))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(1.0 - progress)
    raise ValueError(f"unknown ramp {shape!r} (expected one of {', '.join(RAMPS)})")


def warmup_stable_decay_factor(
    step: int,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    min_lr_ratio: float,
    num_cycles: float,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
) -> float:
    """Warm-up from r to 1, constant 1 for ``stable_steps``, decay from 1 to r over ``decay_steps``, then r
    (r = min_lr_ratio) [kohya: warmup_stable_decay, lr_decay_steps, lr_scheduler_min_lr_ratio]. With q the decay
    progress, the cosine decay is ½·(1 + cos(2π·c·q)) (c as in :func:`cosine_with_min_lr_factor`), linear 1 − q,
    1-sqrt 1 − √q; the warm-up rises with p (linear), ½(1 − cos πp) (cosine) or 1 − √(1 − p) (1-sqrt)."""
    if step < warmup_steps:
        rise = _ramp(warmup_type, step / max(1, warmup_steps))
        return max(0.0, rise * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < warmup_steps + stable_steps:
        return 1.0
    if step < warmup_steps + stable_steps + decay_steps:
        q = (step - warmup_steps - stable_steps) / max(1, decay_steps)
        if decay_type == "cosine":
            fall = 0.5 * (1.0 + math.cos(2.0 * math.pi * num_cycles * q))
        elif decay_type == "linear":
            fall = 1.0 - q
        else:
            fall = 1.0 - math.sqrt(q)
        return max(0.0, fall * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


# --- LambdaLR factories (the `_target_` of conf/scheduler/*.yaml) -----------------------------------------------------


class ScheduleProbe:
    """A torch-free stand-in optimizer for checking a schedule's options (:mod:`sdlora.optim.checks`): the factories
    below return their multiplier function instead of a ``LambdaLR`` for it, after the same validation."""

    def __init__(self, lr: float) -> None:
        self.defaults = {"lr": lr}
        self.param_groups = [{"lr": lr, "initial_lr": lr}]


def is_sdlora_schedule(node: Any) -> bool:
    """Whether a scheduler node names one of the factories below (the Adafactor proxy excepted)."""
    module, _, name = str(node["_target_"]).rpartition(".")
    return module == __name__ and name in FACTORIES


def _lambda_lr(optimizer: Optimizer | ScheduleProbe, multiplier: Callable[[int], float]) -> LambdaLR:
    """``torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)``; for a :class:`ScheduleProbe`, ``multiplier``."""
    if isinstance(optimizer, ScheduleProbe):
        return multiplier
    from torch.optim.lr_scheduler import LambdaLR as TorchLambdaLR

    return TorchLambdaLR(optimizer, multiplier)


def constant(optimizer: Optimizer, total_steps: int) -> LambdaLR:
    """[kohya: constant]."""
    return _lambda_lr(optimizer, constant_factor)


def constant_with_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int | float = 0) -> LambdaLR:
    """[kohya: constant_with_warmup]."""
    warmup = resolve_steps(warmup_steps, total_steps)
    return _lambda_lr(optimizer, partial(constant_with_warmup_factor, warmup_steps=warmup))


def linear(optimizer: Optimizer, total_steps: int, warmup_steps: int | float = 0) -> LambdaLR:
    """[kohya: linear]."""
    warmup = resolve_steps(warmup_steps, total_steps)
    return _lambda_lr(optimizer, partial(linear_factor, total_steps=total_steps, warmup_steps=warmup))


def cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int | float = 0) -> LambdaLR:
    """[kohya: cosine]."""
    warmup = resolve_steps(warmup_steps, total_steps)
    return _lambda_lr(optimizer, partial(cosine_factor, total_steps=total_steps, warmup_steps=warmup))


def cosine_with_restarts(
    optimizer: Optimizer, total_steps: int, warmup_steps: int | float = 0, num_cycles: int = 1
) -> LambdaLR:
    """[kohya: cosine_with_restarts, lr_scheduler_num_cycles (default 1)]."""
    if num_cycles < 1:
        raise ValueError(f"scheduler.num_cycles must be ≥ 1, got {num_cycles}")
    warmup = resolve_steps(warmup_steps, total_steps)
    factor = partial(cosine_with_restarts_factor, total_steps=total_steps, warmup_steps=warmup, num_cycles=num_cycles)
    return _lambda_lr(optimizer, factor)


def polynomial(
    optimizer: Optimizer, total_steps: int, warmup_steps: int | float = 0, power: float = 1.0, lr_end: float = 1e-7
) -> LambdaLR:
    """[kohya: polynomial, lr_scheduler_power (default 1)]. ``lr_end`` is an absolute lr reached at the last step;
    as in diffusers, the ratio r = lr_end / lr uses the optimizer's default lr (``optimizer.lr``) for every group."""
    base_lr = optimizer.defaults.get("lr") or 0.0
    if not lr_end < base_lr:
        raise ValueError(f"scheduler.lr_end ({lr_end}) must be smaller than the learning rate ({base_lr})")
    warmup = resolve_steps(warmup_steps, total_steps)
    factor = partial(
        polynomial_factor, total_steps=total_steps, warmup_steps=warmup, power=power, end_ratio=lr_end / base_lr
    )
    return _lambda_lr(optimizer, factor)


def cosine_with_min_lr(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | float = 0,
    num_cycles: int = 1,
    min_lr_ratio: float = 0.1,
) -> LambdaLR:
    """[kohya: cosine_with_min_lr, lr_scheduler_min_lr_ratio, lr_scheduler_num_cycles]."""
    warmup = resolve_steps(warmup_steps, total_steps)
    factor = partial(
        cosine_with_min_lr_factor,
        total_steps=total_steps,
        warmup_steps=warmup,
        num_cycles=num_cycles / 2,
        min_lr_ratio=min_lr_ratio,
    )
    return _lambda_lr(optimizer, factor)


def warmup_stable_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | float = 0,
    decay_steps: int | float = 0.1,
    num_cycles: int = 1,
    min_lr_ratio: float = 0.0,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
) -> LambdaLR:
    """[kohya: warmup_stable_decay, lr_decay_steps, lr_scheduler_min_lr_ratio]: stable steps = total − warm-up −
    decay."""
    warmup = resolve_steps(warmup_steps, total_steps)
    decay = resolve_steps(decay_steps, total_steps, option="scheduler.decay_steps")
    for option, shape in (("warmup_type", warmup_type), ("decay_type", decay_type)):
        if shape not in RAMPS:
            raise ValueError(f"scheduler.{option}={shape!r} must be one of {', '.join(RAMPS)}")
    if warmup + decay > total_steps:
        raise ValueError(
            f"scheduler.warmup_steps + scheduler.decay_steps ({warmup} + {decay}) exceed the {total_steps} steps"
        )
    factor = partial(
        warmup_stable_decay_factor,
        warmup_steps=warmup,
        stable_steps=total_steps - warmup - decay,
        decay_steps=decay,
        min_lr_ratio=min_lr_ratio,
        num_cycles=num_cycles / 2,
        warmup_type=warmup_type,
        decay_type=decay_type,
    )
    return _lambda_lr(optimizer, factor)


def adafactor(optimizer: Optimizer, total_steps: int, initial_lr: float | None = None) -> LambdaLR:
    """[kohya: lr_scheduler=adafactor] transformers' ``AdafactorSchedule``: Adafactor with ``relative_step`` sets its
    own step size; this proxy reports it (for the ``lr/*`` logs) and reports ``initial_lr`` before the first step
    (the run fills in ``optimizer.lr`` when it is null). Only valid with ``optimizer=adafactor``."""
    from transformers.optimization import Adafactor, AdafactorSchedule

    if not isinstance(optimizer, Adafactor):
        raise ValueError(f"scheduler=adafactor needs optimizer=adafactor, not {type(optimizer).__name__}")
    if not all(group.get("relative_step") for group in optimizer.param_groups):
        raise ValueError(
            "scheduler=adafactor needs optimizer.relative_step=true (with a fixed lr choose another scheduler, e.g. "
            "scheduler=constant_with_warmup)"
        )
    return AdafactorSchedule(optimizer, initial_lr if initial_lr is not None else 0.0)


FACTORIES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
             "cosine_with_min_lr", "warmup_stable_decay")  # fmt: skip
