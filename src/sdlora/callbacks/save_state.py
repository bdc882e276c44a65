"""Training states: what one holds, when one is written (``save.state``), which old ones are removed, and how a
resumed run takes one back.

What: Lightning's checkpoint already holds the optimizer, LR scheduler, precision plugin (grad scaler), loop progress
and the DataLoader's position (:class:`sdlora.data.datamodule.ResumableDataLoader`). This callback replaces the
model ``state_dict`` — which would hold the whole frozen model — with the LoRA alone (kohya keys, trained dtype), and
adds every RNG stream (Python, NumPy, torch CPU/CUDA and the module's noise generator), the running loss average, the
epoch's losses and the skipped-batch count, plus the ``state.json`` information (:mod:`sdlora.state.folder`): kind,
step, epoch, time, the run's fingerprint and session.

When: beside every step and epoch save of the LoRA files (``<save name>-state``, the same schedule), when the run is
stopped early, after the last step (``<name>-state``), and before a non-finite loss stops the run (the exception's
``state_path`` then names it). Retention follows kohya's rules for states (:class:`sdlora.state.retention.Ledger`).

Resume: the LoRA goes back into the network and the loss statistics into the module when the checkpoint is read;
the RNG streams are put back at ``on_train_start``, after everything that draws random numbers while setting up
(model building, LoRA initialisation) and just before the first batch. This callback is part of every run, so a run
without ``save.state`` can still resume from a state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from sdlora import __version__
from sdlora.callbacks.graceful_stop import GracefulStop
from sdlora.callbacks.steps import OptimizerSteps
from sdlora.errors import DiskFull, NonFiniteLoss, NonFiniteWeights, ResumableError, SdloraError
from sdlora.lightning_compat import batches_processed, is_last_batch
from sdlora.optim.schedule_free import evaluation_point
from sdlora.results import RunResults
from sdlora.state import retention
from sdlora.state.fingerprint import fingerprint_hash
from sdlora.state.folder import INFO_KEY, LORA_KEY, is_state_folder, remove_state
from sdlora.state.rng import capture_rng, restore_rng
from sdlora.state.save_schedule import SaveSchedule
from sdlora.utils.atomic import low_space_warning

log = logging.getLogger("sdlora")

EXTRAS_KEY = "sdlora"


class TrainingStates(L.Callback):
    def __init__(
        self,
        run_dir: Path,
        schedule: SaveSchedule,
        fingerprint: dict[str, Any],
        session: dict[str, Any],
        results: RunResults,
        stop: GracefulStop | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.schedule = schedule
        self.fingerprint = fingerprint
        self.session = session  # RunFacts.session(): kept by a resumed run
        self.results = results
        self.stop = stop
        self._kind = "step"  # what the state being written is: step, epoch, final, interrupt, nonfinite
        self._ledger = schedule.state_ledger()
        self._steps = OptimizerSteps()
        self._rng: dict[str, Any] | None = None  # loaded, applied at on_train_start
        self._config_lrs: list[list[float]] = []  # each scheduler's base learning rates as configured

    # ------------------------------------------------------------------------------------------------ write
    def write(self, trainer: L.Trainer, name: str, kind: str) -> Path:
        """Write the training state ``<run_dir>/<name>-state`` (every rank takes part; rank 0 writes)."""
        path = self.run_dir / retention.state_name(name)
        self._kind = kind
        if trainer.is_global_zero and self.results.states and self.results.states[-1].is_dir():
            size = sum(p.stat().st_size for p in self.results.states[-1].iterdir())
            warning = low_space_warning(self.run_dir, size, path.name)
            if warning:
                log.warning("%s", warning)
        with evaluation_point(trainer.optimizers):  # the LoRA at x; ScheduleFreeMode keeps y (schedule-free)
            trainer.save_checkpoint(path, weights_only=False)
        self.results.state_saved(path)
        if trainer.is_global_zero:
            log.info("Saved the training state %s", path)
        return path

    def _remove(self, trainer: L.Trainer, names: list[str]) -> None:
        if not trainer.is_global_zero:
            return
        for name in names:
            path = self.run_dir / retention.state_name(name)
            if is_state_folder(path):
                remove_state(path)
                log.info("Removed %s (save.last_n_*_state)", path.name)
            self.results.state_removed(path)

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        if self._rng is not None:
            use_config_learning_rates(trainer, self._config_lrs)
            restore_rng(self._rng, _generators(pl_module))
            self._rng = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer) or trainer.fast_dev_run or not self.schedule.state:
            return
        s, step = self.schedule, trainer.global_step
        step_due = s.step_due(step)
        if step_due:
            self.write(trainer, retention.step_name(s.output_name, step), "step")
            self._remove(trainer, self._ledger.after_step(step))
        epoch = trainer.current_epoch + 1
        if s.epoch_due(epoch, is_last_batch(trainer)):
            self.write(trainer, retention.epoch_name(s.output_name, epoch), "epoch")
            self._remove(trainer, self._ledger.after_epoch(epoch, step) + self._ledger.after_step(step))
        if self.stop is not None and self.stop.stopping:
            name = retention.step_name(s.output_name, step)
            path = self.write(trainer, name, "interrupt") if not step_due else self.run_dir / retention.state_name(name)
            self.results.interrupted = path
            log.warning("Stopped by %s after step %d; continue with resume=%s", self.stop.signal_name, step, path)
        elif step >= trainer.max_steps > 0:
            # the last step's state is written here, not at train end: it then resumes with the next epoch's batch
            self.write(trainer, s.output_name, "final")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopped = self.stop is not None and self.stop.stopping
        final = self.run_dir / retention.state_name(self.schedule.output_name)
        if self.schedule.state and not stopped and not trainer.fast_dev_run and final not in self.results.states:
            self.write(trainer, self.schedule.output_name, "final")  # training stopped before its last step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A problem found during training names the training state to continue from: after a non-finite loss the
        state of the step before (written now, if its weights are finite), else the run's newest state."""
        if not isinstance(exception, ResumableError):
            return
        if isinstance(exception, NonFiniteLoss) and self.schedule.state:
            name = retention.step_name(self.schedule.output_name, trainer.global_step)
            if self.run_dir / retention.state_name(name) not in self.results.states:
                with contextlib.suppress(NonFiniteWeights, DiskFull):
                    self.write(trainer, name, "nonfinite")
        if self.results.states:
            exception.state_path = self.results.states[-1]

    # ------------------------------------------------------------------------------------------------ content
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.strict_loading = False  # a state's model state_dict is empty: the LoRA is loaded here

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["state_dict"] = pl_module.network.kohya_tensors()
        epoch_done = batches_processed(trainer) >= trainer.num_training_batches  # a resumed run starts the next epoch
        checkpoint[EXTRAS_KEY] = {
            "rng": capture_rng(_generators(pl_module)),
            "loss_average": pl_module.loss_average.state_dict(),
            "epoch_losses": [] if epoch_done else list(pl_module.epoch_losses),
            "nonfinite_skipped": pl_module.nonfinite_skipped,
        }
        checkpoint[INFO_KEY] = {
            "kind": self._kind,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "saved_at": time.time(),
            "saved_at_text": time.strftime("%Y-%m-%d %H:%M:%S"),
            "sdlora_version": __version__,
            "session": dict(self.session),
            "fingerprint_sha256": fingerprint_hash(self.fingerprint),
            "fingerprint": self.fingerprint,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        lora = checkpoint.pop(LORA_KEY, None)
        if lora is not None:
            try:
                pl_module.network.load_kohya_tensors(lora)
            except ValueError as exc:
                raise SdloraError(
                    f"resume: the state's LoRA does not fit this network ({exc}); resume with the network options "
                    "it was trained with (network=…, network.rank, network.conv_rank, network.train_unet/"
                    "train_text_encoder, block dims)"
                ) from None
        extras = checkpoint.get(EXTRAS_KEY)
        if extras is None:
            return
        pl_module.loss_average.load_state_dict(extras["loss_average"])
        pl_module.epoch_losses = list(extras["epoch_losses"])
        pl_module.nonfinite_skipped = int(extras["nonfinite_skipped"])
        self._rng = extras["rng"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._config_lrs = [list(getattr(c.scheduler, "base_lrs", [])) for c in trainer.lr_scheduler_configs]


def _generators(pl_module: L.LightningModule) -> dict:
    """The seeded generators a state keeps: the module's noise/timestep generator and the network's per-step draws
    (DyLoRA's trainable rows; None for types that draw nothing)."""
    network = getattr(pl_module, "network", None)
    return {"module": getattr(pl_module, "generator", None), "network": getattr(network, "generator", None)}


def use_config_learning_rates(trainer: L.Trainer, config_lrs: list[list[float]]) -> None:
    """After a resume, the config's base learning rates replace the state's (they differ only with
    ``resume_allow_changes``): each group's current rate is scaled by new/old base, i.e. the schedule's factor at the
    resumed step is kept, as it is for sdlora's (multiplicative, ``LambdaLR``) schedules."""
    for config, lrs in zip(trainer.lr_scheduler_configs, config_lrs, strict=False):
        scheduler = config.scheduler
        if not hasattr(scheduler, "base_lrs"):
            continue
        for i, (group, new) in enumerate(zip(scheduler.optimizer.param_groups, lrs, strict=False)):
            old = scheduler.base_lrs[i]
            if new == old:
                continue
            group["lr"] = group["lr"] * new / old if old else new
            group["initial_lr"] = new
            scheduler.base_lrs[i] = new
