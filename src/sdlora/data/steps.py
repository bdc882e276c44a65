"""Training length (docs/kohya.md §7, with Lightning's meaning of the limits; docs/design.md §3 pinned behaviour).

optimizer steps per epoch = ⌈batches per epoch / accumulate_grad_batches⌉;
total steps = min(max_steps, max_epochs · steps per epoch), where max_steps = −1 and max_epochs = None mean
"no limit" (at least one must be set); epochs = ⌈total / steps per epoch⌉ (the last one may be partial).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingLength:
    batches_per_epoch: int
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    epochs: int


def training_length(
    batches_per_epoch: int, accumulate_grad_batches: int, max_steps: int, max_epochs: int | None
) -> TrainingLength:
    if batches_per_epoch < 1:
        raise ValueError("an epoch needs at least one batch")
    steps_per_epoch = math.ceil(batches_per_epoch / accumulate_grad_batches)
    limits = []
    if max_steps is not None and max_steps > 0:
        limits.append(max_steps)
    if max_epochs is not None and max_epochs > 0:
        limits.append(max_epochs * steps_per_epoch)
    if not limits:
        raise ValueError("set trainer.max_steps or trainer.max_epochs")
    total = min(limits)
    return TrainingLength(batches_per_epoch, steps_per_epoch, total, math.ceil(total / steps_per_epoch))
