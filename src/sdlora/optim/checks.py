"""Value checks of the ``optimizer`` and ``scheduler`` nodes, by building them once on a small stand-in parameter.

The node's keys are checked against the target's signature first (:mod:`sdlora.optim.factory`); then the optimizer
and the schedule are built for real — every constraint the classes and schedule factories enforce (betas in [0, 1),
``scheduler.num_cycles`` ≥ 1, a ``warmup_steps`` fraction < 1, …) is found before the model is loaded, and reported
as one readable line instead of a traceback from inside Lightning.

- The schedule is built on a stand-in SGD optimizer (sdlora's schedules only read the param groups), over 1000 steps
  when the config is checked and over the run's real horizon once the data plan is known (:func:`schedule_problems`).
  ``scheduler=adafactor`` reports Adafactor's own step size and is checked by rule instead (it needs
  ``optimizer=adafactor`` with ``relative_step``).
- Optimizers from packages that are slow to import (transformers' Adafactor: seconds) are built when the run starts
  (:func:`build_problems` with ``deferred=True``), so that checking a config and ``dry_run=true`` stay fast.
- Without torch (docs/design.md §7): a node equal to a shipped preset apart from ``lr`` is not built
  (:mod:`sdlora.optim.presets`), and sdlora's own schedules are built on a torch-free :class:`ScheduleProbe`
  (:mod:`sdlora.optim.schedulers`), which evaluates the same factory and multiplier; only other targets import torch.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

from sdlora.optim.factory import (
    build_lr_scheduler,
    check_optimizer,
    check_scheduler,
    instantiate_partial,
    lr_problems,
    missing_package_problems,
)
from sdlora.optim.presets import is_shipped_preset
from sdlora.optim.schedulers import ScheduleProbe, is_sdlora_schedule

PROBE_STEPS = 1000  # horizon of the config-time build (the real one is checked once the data plan is known)
DEFERRED_PACKAGES = ("transformers",)  # optimizer classes built only when the run starts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _stand_in_groups(lr: float) -> list[dict]:
    import torch

    return [{"name": "unet", "params": [torch.nn.Parameter(torch.zeros(8, 8))], "lr": lr}]


def preset_problems(optimizer_node: Any) -> list[str]:
    """An unchanged shipped preset: only its package (installed?) and its lr (a positive number) can be wrong."""
    return missing_package_problems(optimizer_node, "optimizer") or lr_problems(optimizer_node)


def is_deferred(optimizer_node: Any) -> bool:
    """Whether the optimizer's class comes from a package imported only when the run starts."""
    from sdlora.optim.factory import rule_name

    return rule_name(optimizer_node).split(".", 1)[0] in DEFERRED_PACKAGES


def build_problems(optimizer_node: Any, deferred: bool = False) -> list[str]:
    """Problems found by building the optimizer on a stand-in parameter (none: an empty list). Deferred optimizers
    are built only with ``deferred=True``."""
    if is_deferred(optimizer_node) != deferred:
        return []
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # e.g. bitsandbytes' paged-on-CPU notice; the run reports fallbacks
            instantiate_partial(optimizer_node)(_stand_in_groups(optimizer_node["lr"]))  # (prodigyplus prints)
    except Exception as exc:
        return [f"optimizer (_target_={optimizer_node['_target_']}): {_first_line(exc)}"]
    return []


def schedule_problems(optimizer_node: Any, scheduler_node: Any, total_steps: int = PROBE_STEPS) -> list[str]:
    """Problems found by building the schedule the run will use over ``total_steps`` on a stand-in optimizer (sdlora's
    own schedules on a torch-free probe)."""
    from sdlora.optim.rules import ADAFACTOR_SCHEDULER, scheduler_in_effect, uses_relative_step_schedule

    scheduler_node = scheduler_in_effect(optimizer_node, scheduler_node)
    if scheduler_node["_target_"] == ADAFACTOR_SCHEDULER:
        if uses_relative_step_schedule(optimizer_node):
            return []
        return ["scheduler=adafactor needs optimizer=adafactor with optimizer.relative_step=true: it reports "
                "Adafactor's own step size (with a fixed lr choose another scheduler, e.g. "
                "scheduler=constant_with_warmup)"]  # fmt: skip
    try:
        if is_sdlora_schedule(scheduler_node):
            multiplier = build_lr_scheduler(instantiate_partial(scheduler_node), ScheduleProbe(optimizer_node["lr"]),
                                            total_steps)  # fmt: skip
            multiplier(0)  # what LambdaLR evaluates when it is built
        else:
            import torch

            stand_in = torch.optim.SGD(_stand_in_groups(optimizer_node["lr"]))
            build_lr_scheduler(instantiate_partial(scheduler_node), stand_in, total_steps)
    except Exception as exc:
        return [f"scheduler (_target_={scheduler_node['_target_']}): {_first_line(exc)}"]
    return []


def check_optimization(cfg: Any) -> list[str]:
    """Keys of both nodes, then (when those are fine) their values, by building them; an unchanged shipped optimizer
    preset only by its package and lr (see the module docstring)."""
    if is_shipped_preset(cfg.optimizer):
        problems = preset_problems(cfg.optimizer) + check_scheduler(cfg.scheduler)
        return problems or schedule_problems(cfg.optimizer, cfg.scheduler)
    problems = check_optimizer(cfg.optimizer) + check_scheduler(cfg.scheduler)
    if problems:
        return problems
    return build_problems(cfg.optimizer) or schedule_problems(cfg.optimizer, cfg.scheduler)
