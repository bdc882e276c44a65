"""kohya's save names and retention rules (docs/kohya.md §8.1–8.2), as pure functions and a ledger.

Names: ``<name>-step00000200`` (step saves), ``<name>-000001`` (epoch saves, 1-based), ``<name>`` (the final save);
a state folder is the save's name + ``-state``.

Retention is applied when a new save of the same kind is made, and removes exactly one candidate (kohya):

- step files [save_last_n_steps N, save_every_n_steps k]: r = s − N − 1, r ← r − (r mod k), delete step r if r ≥ 0.
  The files kept are those with step ≥ s − N: ⌊N/k⌋ + 1 of them.
- step states [save_last_n_steps_state, else save_last_n_steps]: the same r, deleted only if r > 0. N counts steps.
- epoch files and epoch states [save_last_n_epochs(_state) N, save_every_n_epochs k]: delete epoch e − k·N if ≥ 0,
  which keeps N files.

Beyond kohya (whose ``save_last_n_steps`` ignores epoch saves, sd-scripts #1738): with ``save.last_n_steps`` every
epoch file saved more than N steps before the current save is removed too (:func:`older_than`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def step_name(name: str, step: int) -> str:
    """kohya's step save name: ``{name}-step{step:08d}``."""
    return f"{name}-step{step:08d}"


def epoch_name(name: str, epoch: int) -> str:
    """kohya's epoch save name: ``{name}-{epoch:06d}`` (epoch 1-based)."""
    return f"{name}-{epoch:06d}"


def interrupted_name(name: str) -> str:
    """The LoRA saved when a signal stops a run without training states: ``{name}-interrupted``."""
    return f"{name}-interrupted"


def state_name(save_name: str) -> str:
    """The state folder beside a save: ``{save name}-state``."""
    return f"{save_name}-state"


def _remove_step(step: int, every: int, keep_steps: int) -> int:
    r = step - keep_steps - 1
    return r - r % every


def step_to_remove(step: int, every: int, keep_steps: int | None) -> int | None:
    """[kohya get_remove_step_no] The step file to delete when saving at ``step``: r = s − N − 1 rounded down to a
    multiple of ``every``, if r ≥ 0; None without ``keep_steps`` or when nothing is due."""
    if not keep_steps:
        return None
    r = _remove_step(step, every, keep_steps)
    return r if r >= 0 else None


def step_state_to_remove(step: int, every: int, keep_steps: int | None) -> int | None:
    """[kohya save_and_remove_state_stepwise] As :func:`step_to_remove`, but only r > 0 is deleted."""
    if not keep_steps:
        return None
    r = _remove_step(step, every, keep_steps)
    return r if r > 0 else None


def epoch_to_remove(epoch: int, every: int, keep_epochs: int | None) -> int | None:
    """[kohya get_remove_epoch_no] The epoch file (or state) to delete when saving at ``epoch``: e − every·N if ≥ 0."""
    if not keep_epochs:
        return None
    r = epoch - every * keep_epochs
    return r if r >= 0 else None


def older_than(saved_at: Mapping[int, int], step: int, keep_steps: int | None) -> list[int]:
    """Keys of ``saved_at`` (e.g. epoch → the step it was saved at) saved before step − N: what ``save.last_n_steps``
    removes among epoch files (beyond kohya). Empty without ``keep_steps``."""
    if not keep_steps:
        return []
    return sorted(key for key, saved in saved_at.items() if saved < step - keep_steps)


@dataclass
class Ledger:
    """The saves of one kind (LoRA files or training states) and which of them a new save removes.

    ``step_rule`` is :func:`step_to_remove` (files) or :func:`step_state_to_remove` (states); ``keep_steps`` /
    ``keep_epochs`` are ``save.last_n_steps(_state)`` / ``save.last_n_epochs(_state)``. Each method returns the save
    names to delete, and remembers the epoch saves for :meth:`old_epochs`.
    """

    output_name: str
    every_n_steps: int | None
    every_n_epochs: int | None
    keep_steps: int | None
    keep_epochs: int | None
    step_rule: Callable[[int, int, int | None], int | None]
    epoch_steps: dict[int, int] = field(default_factory=dict)  # epoch save → the step it was made at

    def after_step(self, step: int) -> list[str]:
        """kohya's step rule for a save at ``step``, then the epoch saves made more than keep_steps before it."""
        names = []
        if self.every_n_steps:
            removed = self.step_rule(step, self.every_n_steps, self.keep_steps)
            if removed is not None:
                names.append(step_name(self.output_name, removed))
        return names + self.old_epochs(step)

    def old_epochs(self, step: int) -> list[str]:
        """``save.last_n_steps`` beyond kohya: epoch saves made before step − N."""
        names = []
        for epoch in older_than(self.epoch_steps, step, self.keep_steps):
            names.append(epoch_name(self.output_name, epoch))
            del self.epoch_steps[epoch]
        return names

    def after_epoch(self, epoch: int, step: int) -> list[str]:
        """kohya's epoch rule for the save of ``epoch`` (1-based) made at ``step``: epoch e − every·N goes."""
        names = []
        removed = epoch_to_remove(epoch, self.every_n_epochs or 1, self.keep_epochs)
        if removed is not None:
            names.append(epoch_name(self.output_name, removed))
            self.epoch_steps.pop(removed, None)
        self.epoch_steps[epoch] = step
        return names
