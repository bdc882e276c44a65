"""Value checks of the ``optimizer`` and ``scheduler`` nodes, by building them once on a small stand-in parameter.

The node's keys are checked against the target's signature first (:mod:`sdlora.optim.factory`); then the optimizer
and its schedule are built for real — every constraint the classes and schedule factories enforce (betas in [0, 1),
``scheduler.num_cycles`` ≥ 1, a ``warmup_steps`` fraction < 1, ``scheduler=adafactor`` only with Adafactor …) is
found before the model is loaded, and reported as one readable line instead of a traceback from inside Lightning.
"""

from __future__ import annotations

import warnings

from omegaconf import DictConfig

from sdlora.optim.factory import build_scheduler, check_optimizer, check_scheduler, instantiate_partial

PROBE_STEPS = 1000  # horizon of the validation-time build (the real one is checked once the data plan is known)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _stand_in_groups(lr: float) -> list[dict]:
    import torch

    return [{"name": "unet", "params": [torch.nn.Parameter(torch.zeros(8, 8))], "lr": lr}]


def build_problems(optimizer_node: DictConfig, scheduler_node: DictConfig, total_steps: int = PROBE_STEPS) -> list[str]:
    """Problems found by building the optimizer and the schedule over ``total_steps`` (none: an empty list)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. bitsandbytes' paged-on-CPU notice; the run reports fallbacks
            optimizer = instantiate_partial(optimizer_node)(_stand_in_groups(optimizer_node.lr))
    except Exception as exc:
        return [f"optimizer (_target_={optimizer_node._target_}): {_first_line(exc)}"]
    from sdlora.optim.rules import scheduler_in_effect

    scheduler_node = scheduler_in_effect(optimizer_node, scheduler_node)
    try:
        build_scheduler(instantiate_partial(scheduler_node), optimizer, total_steps)
    except Exception as exc:
        return [f"scheduler (_target_={scheduler_node._target_}): {_first_line(exc)}"]
    return []


def check_optimization(cfg: DictConfig) -> list[str]:
    """Keys of both nodes, then (when those are fine) their values, by building them."""
    problems = check_optimizer(cfg.optimizer) + check_scheduler(cfg.scheduler)
    if problems:
        return problems
    return build_problems(cfg.optimizer, cfg.scheduler)
