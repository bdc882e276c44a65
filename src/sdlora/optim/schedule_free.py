"""Schedule-free optimizers: the parameters they train are not the parameters to evaluate.

Schedule-free training (Defazio et al., 2024; ``optimizer=adamw_schedulefree|radam_schedulefree|sgd_schedulefree``
from the ``schedulefree`` package, ``prodigy_schedulefree`` from ``prodigy-plus-schedule-free``) keeps two sequences:
z, the base optimizer's iterate (in the optimizer state), and x, a running average of the z's — the evaluation
point, which replaces the learning-rate schedule. The gradient is taken at y = β₁·x + (1 − β₁)·z, and in training
mode the parameters hold y. ``optimizer.eval()`` turns them into x = (y − (1 − β₁)·z)/β₁ and ``optimizer.train()``
back into y [current sd-scripts: ``optimizer_eval_fn`` / ``optimizer_train_fn`` around sampling and saving].

:func:`evaluation_point` is the context for everything that evaluates or keeps the LoRA: validation, sample images,
LoRA files (the saved LoRA is x, as sd-scripts saves it) and training states. ``train()`` after ``eval()`` recomputes y
from x and z, which is not bit-exact in floating point, so the context keeps a copy of y and puts it back: evaluating
never changes training, and a state (saved at x) carries y for an exact resume
(:class:`sdlora.callbacks.schedule_free.ScheduleFreeMode`). Re-entrant: nested uses act once. Optimizers without a
schedule-free training mode pass through unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config checks import this module before torch is (docs/design.md §7)
    import torch

#: Packages whose optimizers are schedule-free (config checks, before any optimizer exists).
SCHEDULE_FREE_PACKAGES = ("schedulefree", "prodigyplus")
#: Attribute holding the parameters' training-mode values (y) while an optimizer is at its evaluation point.
TRAIN_POINT = "_sdlora_train_point"


def is_schedule_free_class(class_name: str) -> bool:
    """Whether ``module.Class`` names a schedule-free optimizer."""
    return class_name.split(".", 1)[0] in SCHEDULE_FREE_PACKAGES


def in_training_mode(optimizer: Any) -> bool:
    """A schedule-free optimizer whose parameters hold y now (``train_mode`` set in any group)."""
    groups = getattr(optimizer, "param_groups", [])
    return callable(getattr(optimizer, "eval", None)) and any(g.get("train_mode") is True for g in groups)


def has_training_mode(optimizer: Any) -> bool:
    """Whether ``optimizer`` switches its parameters between training and evaluation (``train_mode`` groups)."""
    groups = getattr(optimizer, "param_groups", [])
    return callable(getattr(optimizer, "train", None)) and any("train_mode" in g for g in groups)


def parameters(optimizer: Any) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def train_point(optimizer: Any) -> list[torch.Tensor] | None:
    """y (copies) while ``optimizer`` is at its evaluation point inside :func:`evaluation_point`, else None."""
    return getattr(optimizer, TRAIN_POINT, None)


def to_training(optimizer: Any, values: list[torch.Tensor] | None = None) -> None:
    """``optimizer.train()``, then the parameters set to ``values`` exactly (the y kept when evaluation began)."""
    import torch

    with torch.no_grad():
        optimizer.train()
        if values is not None:
            for param, value in zip(parameters(optimizer), values, strict=True):
                param.copy_(value)


@contextlib.contextmanager
def evaluation_point(optimizers: Iterable[Any]) -> Iterator[None]:
    """The parameters of every schedule-free optimizer in training mode at x inside the block; y afterwards, bit for
    bit (see the module docstring)."""
    entered = []
    for optimizer in optimizers:
        if not in_training_mode(optimizer) or train_point(optimizer) is not None:
            continue
        setattr(optimizer, TRAIN_POINT, [p.detach().clone() for p in parameters(optimizer)])
        optimizer.eval()
        entered.append(optimizer)
    try:
        yield
    finally:
        for optimizer in entered:
            values = train_point(optimizer)
            setattr(optimizer, TRAIN_POINT, None)
            to_training(optimizer, values)
