"""What sdlora puts into a training state and takes back out when a run resumes.

Lightning's checkpoint already holds the optimizer, LR scheduler, precision plugin (grad scaler), loop progress and
the DataLoader's position (:class:`sdlora.data.datamodule.ResumableDataLoader`). This callback replaces the model
``state_dict`` — which would hold the whole frozen model — with the LoRA alone (kohya keys, trained dtype), and adds
every RNG stream (Python, NumPy, torch CPU/CUDA and the module's noise generator), the running loss average, the
epoch's losses and the skipped-batch count, plus the ``state.json`` information (:mod:`sdlora.state.folder`).

On resume the LoRA goes back into the network and the loss statistics into the module when the checkpoint is read;
the RNG streams are put back at ``on_train_start``, after everything that draws random numbers while setting up
(model building, LoRA initialisation) and just before the first batch.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from sdlora import __version__
from sdlora.errors import SdloraError
from sdlora.state.fingerprint import fingerprint_hash
from sdlora.state.folder import INFO_KEY, LORA_KEY
from sdlora.state.rng import capture_rng, restore_rng

EXTRAS_KEY = "sdlora"


class TrainingState(L.Callback):
    def __init__(self, fingerprint: dict[str, Any]) -> None:
        self.fingerprint = fingerprint
        self.kind = "step"  # what the next state is (set by the saving callback): step, epoch, final, interrupt, …
        self._rng: dict[str, Any] | None = None  # loaded, applied at on_train_start
        self._config_lrs: list[list[float]] = []  # each scheduler's base learning rates as configured

    @staticmethod
    def _generators(pl_module: L.LightningModule) -> dict:
        return {"module": getattr(pl_module, "generator", None)}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.strict_loading = False  # a state's model state_dict is empty: the LoRA is loaded here

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["state_dict"] = pl_module.network.state_dict()
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        epoch_done = progress.processed >= trainer.num_training_batches  # a resumed run starts the next epoch
        checkpoint[EXTRAS_KEY] = {
            "rng": capture_rng(self._generators(pl_module)),
            "loss_average": pl_module.loss_average.state_dict(),
            "epoch_losses": [] if epoch_done else list(pl_module.epoch_losses),
            "nonfinite_skipped": pl_module.nonfinite_skipped,
        }
        checkpoint[INFO_KEY] = {
            "kind": self.kind,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "saved_at": time.time(),
            "saved_at_text": time.strftime("%Y-%m-%d %H:%M:%S"),
            "sdlora_version": __version__,
            "fingerprint_sha256": fingerprint_hash(self.fingerprint),
            "fingerprint": self.fingerprint,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        lora = checkpoint.pop(LORA_KEY, None)
        if lora is not None:
            try:
                pl_module.network.load_state_dict(lora)
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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None:
            use_config_learning_rates(trainer, self._config_lrs)
            restore_rng(self._rng, self._generators(pl_module))
            self._rng = None


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
