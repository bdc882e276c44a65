"""The weights sample images are made with: a schedule-free optimizer's evaluation point
(:mod:`sdlora.optim.schedule_free`) and, with ``ema.use_for_eval``, the EMA of the LoRA
(:class:`sdlora.callbacks.ema.LoRAEMA`). The validation loss evaluates both the live and the EMA weights itself.

A callback that offers other weights for evaluation has a method ``evaluation_swap(pl_module)`` returning a context
manager that puts them into the network and restores the trained ones exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sdlora.optim.schedule_free import evaluation_point


@contextlib.contextmanager
def evaluation_weights(trainer: Any, pl_module: Any) -> Iterator[None]:
    """Inside the block the network holds the weights to evaluate; the trained ones afterwards, bit for bit."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(evaluation_point(getattr(trainer, "optimizers", [])))
        for callback in getattr(trainer, "callbacks", []):
            swap = getattr(callback, "evaluation_swap", None)
            if swap is not None:
                stack.enter_context(swap(pl_module))
        yield
