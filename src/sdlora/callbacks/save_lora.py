"""Write the LoRA files of a run, when kohya would, and remove old ones by kohya's retention rules
(docs/kohya.md §8; the schedule: :mod:`sdlora.state.save_schedule`).

- every ``save.every_n_steps`` optimizer steps: ``<name>-step00000200.<ext>`` (``ss_epoch`` = the 0-based epoch, as
  kohya), after that step's sample images;
- after the last step of every ``save.every_n_epochs``-th epoch except the last: ``<name>-000001.<ext>``;
- when the run is stopped early (:class:`~sdlora.callbacks.graceful_stop.GracefulStop`): ``<name>-step<N>.<ext>``;
- at the end: ``<name>.<ext>`` (``ss_epoch`` = the epochs run).

Variants (:class:`FileVariant`: ``<name>-ema.<ext>``, :mod:`sdlora.callbacks.ema`) are written beside every file. A
removed save takes its variants and ``<name>.diffusers.safetensors`` copies (``save.also_diffusers``) with it. A
schedule-free optimizer's files hold its evaluation point (:mod:`sdlora.optim.schedule_free`). Only global rank 0
writes. Training states are the job of :class:`~sdlora.callbacks.save_state.TrainingStates`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from sdlora.callbacks.graceful_stop import GracefulStop
from sdlora.callbacks.steps import OptimizerSteps
from sdlora.lightning_compat import is_last_batch
from sdlora.network.io import SUFFIXES, save_lora
from sdlora.network.metadata import LoRAMetadata
from sdlora.network.network import LoRANetwork
from sdlora.optim.schedule_free import evaluation_point
from sdlora.results import RunResults
from sdlora.state import retention
from sdlora.state.save_schedule import SaveSchedule
from sdlora.utils.atomic import low_space_warning

log = logging.getLogger("sdlora")


@dataclass(frozen=True)
class FileVariant:
    """Other weights written beside every LoRA file: ``<name><suffix>.<ext>`` (e.g. ``-ema``), with the same
    retention. ``weights(network)`` is a context manager that puts them into the network (and the trained ones back
    afterwards); ``metadata()`` gives the keys added to the run's metadata."""

    suffix: str
    weights: Callable[[LoRANetwork], AbstractContextManager]
    metadata: Callable[[], dict[str, str]]


class SaveLoRAFiles(L.Callback):
    def __init__(
        self,
        run_dir: Path,
        metadata: LoRAMetadata,
        schedule: SaveSchedule,
        results: RunResults,
        steps_per_epoch: int,
        *,
        stop: GracefulStop | None = None,
        save_format: str = "safetensors",
        dtype: torch.dtype | None = None,
        also_diffusers: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metadata = metadata
        self.schedule = schedule
        self.results = results
        self.steps_per_epoch = steps_per_epoch
        self.stop = stop
        self.suffix = SUFFIXES[save_format]
        self.dtype = dtype
        self.also_diffusers = also_diffusers
        self._ledger = schedule.file_ledger()
        self._steps = OptimizerSteps()
        self.variants: list[FileVariant] = []

    # ------------------------------------------------------------------------------------------------ files
    def add_variant(self, variant: FileVariant) -> None:
        """Also write ``<name><variant.suffix>.<ext>`` beside every LoRA file (and remove it with it)."""
        self.variants.append(variant)

    def save(self, network: LoRANetwork, prediction_type: str, name: str, steps: int, epoch: int) -> Path:
        """Write ``network`` as ``<run_dir>/<name><suffix>`` with the run's metadata and this save's step/epoch, and
        every variant beside it (``<name>-ema<suffix>``)."""
        metadata = self.metadata.for_save(network, prediction_type, steps, epoch)
        path = self._write(network, name, metadata)
        for variant in self.variants:
            with variant.weights(network):
                self._write(network, f"{name}{variant.suffix}", {**metadata, **variant.metadata()})
        return path

    def save_single(
        self, network: LoRANetwork, prediction_type: str, name: str, steps: int, epoch: int, extra: dict[str, str]
    ) -> Path:
        """Write ``network`` as ``<run_dir>/<name><suffix>`` alone (no variants; not one of the run's saves), with
        the run's metadata and ``extra`` (the best LoRA, :mod:`sdlora.callbacks.best`)."""
        metadata = {**self.metadata.for_save(network, prediction_type, steps, epoch), **extra}
        return self._write(network, name, metadata, record=False)

    def _write(self, network: LoRANetwork, name: str, metadata: dict[str, str], record: bool = True) -> Path:
        tensors = network.kohya_tensors(self.dtype)
        warning = low_space_warning(self.run_dir, sum(t.numel() * t.element_size() for t in tensors.values()), name)
        if warning:
            log.warning("%s", warning)
        path = save_lora(self.run_dir / f"{name}{self.suffix}", tensors, metadata)
        if record:
            self.results.file_saved(path)
        log.info("Saved %s", path)
        if self.also_diffusers:
            from sdlora.network.export import peft_state_dict

            export = save_lora(
                self.run_dir / f"{name}.diffusers.safetensors", peft_state_dict(network, self.dtype), metadata
            )
            if record:
                self.results.file_saved(export)
        return path

    def _remove(self, names: list[str]) -> None:
        """Delete the saves ``names`` of this run (each LoRA file, its variants and diffusers copies), if present."""
        for name in names:
            for variant in ["", *(v.suffix for v in self.variants)]:
                stem = f"{name}{variant}"
                for path in (self.run_dir / f"{stem}{self.suffix}", self.run_dir / f"{stem}.diffusers.safetensors"):
                    if path.is_file():
                        path.unlink()
                        log.info("Removed %s (save.last_n_*)", path.name)
                    self.results.file_removed(path)

    def _save_now(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, epoch: int) -> None:
        with evaluation_point(trainer.optimizers):  # a schedule-free optimizer's evaluation point x
            self.save(pl_module.network, pl_module.components.prediction_type, name, trainer.global_step, epoch)

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer) or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        s, step = self.schedule, trainer.global_step
        step_due = s.step_due(step)
        if step_due:
            self._save_now(trainer, pl_module, retention.step_name(s.output_name, step), trainer.current_epoch)
            self._remove(self._ledger.after_step(step))
        epoch = trainer.current_epoch + 1
        if s.epoch_due(epoch, is_last_batch(trainer)):
            self._save_now(trainer, pl_module, retention.epoch_name(s.output_name, epoch), epoch)
            self._remove(self._ledger.after_epoch(epoch, step) + self._ledger.old_epochs(step))
        if self.stop is not None and self.stop.stopping:
            self._save_at_stop(trainer, pl_module, step, step_due)

    def _save_at_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, saved: bool) -> None:
        """The LoRA of the step a signal stopped the run after: ``<name>-step<N>`` beside its state, or without
        ``save.state`` ``<name>-interrupted`` (the LoRA so far; nothing to resume from)."""
        s = self.schedule
        if s.state:
            if not saved:
                self._save_now(trainer, pl_module, retention.step_name(s.output_name, step), trainer.current_epoch)
            return
        path = self.run_dir / f"{retention.interrupted_name(s.output_name)}{self.suffix}"
        self._save_now(trainer, pl_module, path.stem, trainer.current_epoch)
        self.results.interrupted = path
        log.warning("Stopped by %s after step %d; the LoRA so far is %s (save.state=true also saves a state to "
                    "resume from)", self.stop.signal_name, step, path)  # fmt: skip

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopped = self.stop is not None and self.stop.stopping
        if trainer.fast_dev_run or stopped or not trainer.is_global_zero:
            return
        epochs_run = math.ceil(trainer.global_step / self.steps_per_epoch)
        self._save_now(trainer, pl_module, self.schedule.output_name, epochs_run)
