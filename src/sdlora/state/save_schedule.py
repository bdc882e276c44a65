"""When a run saves [kohya: save_every_n_steps/epochs, save_last_n_steps/epochs(_state), save_state].

- every ``save.every_n_steps`` optimizer steps: ``<name>-step00000200``;
- after the last step of every ``save.every_n_epochs``-th epoch except the run's last: ``<name>-000001``;
- at the end: ``<name>``.

The LoRA files and the training states (with ``save.state``) are saved at the same moments, each with its own
retention (:class:`sdlora.state.retention.Ledger`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sdlora.config.schema import SaveConfig
from sdlora.state import retention


@dataclass(frozen=True)
class SaveSchedule:
    output_name: str
    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    last_n_steps: int | None = None
    last_n_epochs: int | None = None
    state: bool = False
    last_n_steps_state: int | None = None  # resolved: save.last_n_steps when null
    last_n_epochs_state: int | None = None  # resolved: save.last_n_epochs when null
    epochs: int = 1  # the run's number of epochs (no numbered save after the last one)

    @classmethod
    def from_config(cls, save: SaveConfig, epochs: int) -> SaveSchedule:
        return cls(
            save.output_name, save.every_n_steps, save.every_n_epochs, save.last_n_steps, save.last_n_epochs,
            save.state, save.last_n_steps_state, save.last_n_epochs_state, epochs,
        )  # fmt: skip

    def step_due(self, step: int) -> bool:
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def epoch_due(self, epoch: int, last_batch_of_epoch: bool) -> bool:
        """At the end of the 1-based ``epoch`` (its last batch just ended), except after the run's last epoch."""
        every = self.every_n_epochs
        return last_batch_of_epoch and bool(every) and epoch % every == 0 and epoch < self.epochs

    def file_ledger(self) -> retention.Ledger:
        return retention.Ledger(self.output_name, self.every_n_steps, self.every_n_epochs, self.last_n_steps,
                                self.last_n_epochs, retention.step_to_remove)  # fmt: skip

    def state_ledger(self) -> retention.Ledger:
        return retention.Ledger(self.output_name, self.every_n_steps, self.every_n_epochs, self.last_n_steps_state,
                                self.last_n_epochs_state, retention.step_state_to_remove)  # fmt: skip
