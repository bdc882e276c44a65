"""Write LoRA files and training states to the run folder, when kohya would (kohya-semantics §8).

- every ``save.every_n_steps`` optimizer steps: ``<name>-step00000200.<ext>`` (``ss_epoch`` = the 0-based epoch, as
  kohya), after that step's sample images;
- after the last step of every ``save.every_n_epochs``-th epoch except the last: ``<name>-000001.<ext>``;
- at the end: ``<name>.<ext>`` (``ss_epoch`` = the epochs run).

With ``save.state`` a state folder (``<save name>-state``) is written beside every step and epoch save, and
``<name>-state`` at the last step. Retention follows kohya's rules (:mod:`sdlora.state.retention`); a removed save
takes its ``<name>.diffusers.safetensors`` copy (``save.also_diffusers``) with it.

With ``save.state``, Ctrl-C finishes the current optimizer step, writes ``<name>-step<N>.<ext>`` and its state, and
stops (a second Ctrl-C stops at once, without a state); a non-finite loss writes a state before the run stops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from sdlora.callbacks.interrupt import GracefulInterrupt
from sdlora.network.io import SUFFIXES, save_lora
from sdlora.network.metadata import save_time_metadata
from sdlora.network.network import LoRANetwork
from sdlora.state import retention
from sdlora.state.folder import is_state_folder, remove_state

log = logging.getLogger("sdlora")


@dataclass(frozen=True)
class SaveSchedule:
    """When to save and what to keep [kohya: save_every_n_steps/epochs, save_last_n_steps/epochs(_state),
    save_state]; ``epochs`` is the run's number of epochs (no numbered save after the last one)."""

    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    last_n_steps: int | None = None
    last_n_epochs: int | None = None
    state: bool = False
    last_n_steps_state: int | None = None
    last_n_epochs_state: int | None = None
    epochs: int = 1

    @property
    def keep_steps_state(self) -> int | None:
        return self.last_n_steps_state or self.last_n_steps

    @property
    def keep_epochs_state(self) -> int | None:
        return self.last_n_epochs_state or self.last_n_epochs


class SaveLoRA(L.Callback):
    def __init__(
        self,
        run_dir: Path,
        output_name: str,
        metadata: Callable[[str], dict[str, str]],
        steps_per_epoch: int,
        save_format: str = "safetensors",
        dtype: torch.dtype | None = None,
        also_diffusers: bool = False,
        schedule: SaveSchedule | None = None,
        state_kind: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.output_name = output_name
        self.metadata = metadata
        self.suffix = SUFFIXES[save_format]
        self.dtype = dtype
        self.steps_per_epoch = steps_per_epoch
        self.also_diffusers = also_diffusers
        self.schedule = schedule or SaveSchedule()
        self.state_kind = state_kind  # tells the TrainingState callback what the next state is
        self.saved: list[Path] = []  # LoRA files of this run still on disk
        self.states: list[Path] = []  # state folders of this run still on disk
        self.interrupted: Path | None = None  # the state written when Ctrl-C stopped the run
        self._epoch_steps: dict[int, int] = {}  # epoch file → the step it was saved at (save.last_n_steps)
        self._epoch_state_steps: dict[int, int] = {}
        self._last_step: int | None = None
        self._interrupt = GracefulInterrupt()

    # ------------------------------------------------------------------------------------------------ files
    def save(self, network: LoRANetwork, prediction_type: str, name: str, steps: int, epoch: int) -> Path:
        """Write ``network`` as ``<run_dir>/<name><suffix>`` with the run's metadata and this save's step/epoch."""
        metadata = {**self.metadata(prediction_type), **save_time_metadata(steps, epoch)}
        path = save_lora(self.run_dir / f"{name}{self.suffix}", network.state_dict(self.dtype), metadata)
        self._remember(path)
        if self.also_diffusers:
            from sdlora.network.export import peft_state_dict

            export = save_lora(
                self.run_dir / f"{name}.diffusers.safetensors", peft_state_dict(network, self.dtype), metadata
            )
            self._remember(export)
        return path

    def _remember(self, path: Path) -> None:
        if path not in self.saved:
            self.saved.append(path)

    def _remove(self, name: str) -> None:
        """Delete the save ``name`` of this run (its LoRA file and diffusers copy), if present."""
        for path in (self.run_dir / f"{name}{self.suffix}", self.run_dir / f"{name}.diffusers.safetensors"):
            if path.is_file():
                path.unlink()
                log.info("Removed %s (save.last_n_*)", path.name)
            if path in self.saved:
                self.saved.remove(path)

    def _remove_state(self, name: str) -> None:
        path = self.run_dir / retention.state_name(name)
        if is_state_folder(path):
            remove_state(path)
            log.info("Removed %s (save.last_n_*_state)", path.name)
        if path in self.states:
            self.states.remove(path)

    def save_state(self, trainer: L.Trainer, name: str, kind: str) -> Path:
        """Write the training state ``<run_dir>/<name>-state`` (every rank takes part; rank 0 writes)."""
        path = self.run_dir / retention.state_name(name)
        if self.state_kind is not None:
            self.state_kind(kind)
        trainer.save_checkpoint(path, weights_only=False)
        if path not in self.states:
            self.states.append(path)
        if trainer.is_global_zero:
            log.info("Saved the training state %s", path)
        return path

    # ------------------------------------------------------------------------------------------------ saves
    def _save_step(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, kind: str = "step") -> None:
        s, name = self.schedule, retention.step_name(self.output_name, step)
        if trainer.is_global_zero:
            self.save(pl_module.network, pl_module.components.prediction_type, name, step, trainer.current_epoch)
            if s.every_n_steps:
                removed = retention.step_to_remove(step, s.every_n_steps, s.last_n_steps)
                if removed is not None:
                    self._remove(retention.step_name(self.output_name, removed))
            self._prune_epoch_files(step)
        if s.state:
            self.save_state(trainer, name, kind)
            if trainer.is_global_zero:
                self._prune_states(step)

    def _prune_epoch_files(self, step: int) -> None:
        """``save.last_n_steps`` beyond kohya: remove the epoch files saved before step − N."""
        for epoch in retention.older_than(self._epoch_steps, step, self.schedule.last_n_steps):
            self._remove(retention.epoch_name(self.output_name, epoch))
            del self._epoch_steps[epoch]

    def _prune_states(self, step: int) -> None:
        s = self.schedule
        if s.every_n_steps:
            removed = retention.step_state_to_remove(step, s.every_n_steps, s.keep_steps_state)
            if removed is not None:
                self._remove_state(retention.step_name(self.output_name, removed))
        for epoch in retention.older_than(self._epoch_state_steps, step, s.keep_steps_state):
            self._remove_state(retention.epoch_name(self.output_name, epoch))
            del self._epoch_state_steps[epoch]

    def _save_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        s, name, step = self.schedule, retention.epoch_name(self.output_name, epoch), trainer.global_step
        if trainer.is_global_zero:
            self.save(pl_module.network, pl_module.components.prediction_type, name, step, epoch)
            self._keep_epoch(epoch, step, s.last_n_epochs, self._epoch_steps, self._remove)
            self._prune_epoch_files(step)
        if s.state:
            self.save_state(trainer, name, "epoch")
            if trainer.is_global_zero:
                self._keep_epoch(epoch, step, s.keep_epochs_state, self._epoch_state_steps, self._remove_state)
                self._prune_states(step)

    def _keep_epoch(
        self, epoch: int, step: int, keep: int | None, saved_at: dict[int, int], remove: Callable[[str], None]
    ) -> None:
        """kohya's epoch rule for a new epoch save (file or state): remove epoch e − every·N, remember this one."""
        removed = retention.epoch_to_remove(epoch, self.schedule.every_n_epochs, keep)
        if removed is not None:
            remove(retention.epoch_name(self.output_name, removed))
            saved_at.pop(removed, None)
        saved_at[epoch] = step

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if self.schedule.state and not trainer.fast_dev_run:
            self._interrupt.install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or trainer.fast_dev_run:
            return  # gradient accumulation: no optimizer step was taken with this batch
        self._last_step = step
        s = self.schedule
        saved_now = bool(s.every_n_steps) and step % s.every_n_steps == 0
        if saved_now:
            self._save_step(trainer, pl_module, step)
        epoch = trainer.current_epoch + 1
        # The epoch's last step: its save is made here rather than in on_train_epoch_end, so that a state resumes
        # with the next epoch's first batch (a checkpoint taken at epoch end restarts badly in Lightning 2.6).
        last_of_epoch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if last_of_epoch and s.every_n_epochs and epoch % s.every_n_epochs == 0 and epoch < s.epochs:
            self._save_epoch(trainer, pl_module, epoch)
        if self._interrupt.requested and step < trainer.max_steps:
            if not (saved_now and s.state):
                self._save_step(trainer, pl_module, step, kind="interrupt")
            self.interrupted = self.run_dir / retention.state_name(retention.step_name(self.output_name, step))
            log.warning("Stopped by Ctrl-C after step %d; continue with resume=%s", step, self.interrupted)
            trainer.should_stop = True
        elif s.state and step >= trainer.max_steps > 0:
            self.save_state(trainer, self.output_name, "final")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._interrupt.uninstall()
        if trainer.fast_dev_run or self.interrupted:
            return
        if trainer.is_global_zero:
            epochs_run = math.ceil(trainer.global_step / self.steps_per_epoch)
            network, prediction = pl_module.network, pl_module.components.prediction_type
            self.save(network, prediction, self.output_name, trainer.global_step, epochs_run)
        final_state = self.run_dir / retention.state_name(self.output_name)
        if self.schedule.state and final_state not in self.states:  # training stopped before its last step
            self.save_state(trainer, self.output_name, "final")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._interrupt.uninstall()
        from sdlora.lit.module import NonFiniteLoss

        if not (isinstance(exception, NonFiniteLoss) and self.schedule.state):
            return
        name = retention.step_name(self.output_name, trainer.global_step)
        path = self.run_dir / retention.state_name(name)
        if path not in self.states:
            path = self.save_state(trainer, name, "nonfinite")
        exception.args = (
            f"{exception.args[0]}\nThe state before this step is in {path}: resume={path} continues from there "
            "(with trainer.skip_nonfinite=true, or a lower learning rate and resume_allow_changes=true).",
            *exception.args[1:],
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._interrupt.uninstall()
