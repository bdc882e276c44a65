"""An exponential moving average of the LoRA weights (``ema=default``; sd-scripts #1321, closed PRs #893/#1100).

One job: keep the EMA θ̄ of the trainable LoRA parameters (float32, :class:`sdlora.ema.weights.ShadowWeights`) and
offer it to the rest of the run.

- Updates: every ``ema.every_n_steps`` optimizer steps, after max-norm and the finite-weights check, before sample
  images and saves, θ̄ ← β·θ̄ + (1 − β)·θ with β from :func:`sdlora.ema.decay.ema_decay` (constant ``ema.decay``, or
  the warm-up form with ``ema.power``). θ̄ starts as the weights at the start of training.
- Files: ``<name>-ema.<ext>`` beside every LoRA file (a :class:`~sdlora.callbacks.save_lora.FileVariant`: the same
  steps, epochs and retention), with ``ss_ema_decay`` (and ``ss_ema_power``, ``ss_ema_every_n_steps``); written from
  the float32 θ̄ (:meth:`file_weights`), cast to ``save.precision`` if set — not rounded through a bf16/fp16 LoRA.
- Evaluation (``ema.use_for_eval``): sample images are made with θ̄ (:meth:`evaluation_swap`), and every validation
  also computes the loss with θ̄ on the same images, timesteps and noise — ``val/loss_ema`` (and per timestep band)
  beside ``val/loss``.
- Training states: θ̄, the update count and the post-hoc EMAs are this callback's part of the state (Lightning's
  callback ``state_dict``), so a resumed run continues them exactly.
- Post-hoc EMA (``ema.posthoc``): two power-function EMAs (σ_rel ``ema.posthoc_sigma_rels``, :mod:`sdlora.ema.decay`)
  are updated with θ̄ and written every ``ema.snapshot_every`` steps and after the last step as
  ``<run folder>/posthoc_ema/sigma0.050-step00000100.safetensors`` (kohya LoRA files, float32, metadata
  ``ss_ema_sigma_rel``, ``ss_ema_gamma``, ``ss_ema_updates``) for ``sdlora-posthoc-ema``. A resumed run copies the
  earlier snapshots of the run it resumes into its own folder, so one folder holds the whole history.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from sdlora.callbacks.steps import OptimizerSteps
from sdlora.config.schema import EMAConfig, EMADevice
from sdlora.ema.decay import ema_decay, gamma_for, power_beta
from sdlora.ema.weights import ShadowWeights

log = logging.getLogger("sdlora")

POSTHOC_DIR = "posthoc_ema"


def snapshot_name(sigma_rel: float, step: int) -> str:
    return f"sigma{sigma_rel:.3f}-step{step:08d}"


def snapshot_step(path: Path) -> int | None:
    """The step of a snapshot file name (None for other files)."""
    stem = path.name.removesuffix(".safetensors")
    head, _, step = stem.rpartition("-step")
    return int(step) if head.startswith("sigma") and step.isdigit() else None


class LoRAEMA(L.Callback):
    def __init__(self, config: EMAConfig, *, validation=None, metadata=None, run_dir: Path | None = None,
                 resumed_from: Path | None = None) -> None:  # fmt: skip
        self.config = config
        self.validation = validation  # a ValidationLoss for val/loss_ema (ema.use_for_eval with validation)
        self.metadata = metadata  # LoRAMetadata of the run (post-hoc snapshots)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resumed_from = resumed_from  # the training state a resumed run starts from
        self.gammas = [gamma_for(s) for s in config.posthoc_sigma_rels] if config.posthoc else []
        self.ema: ShadowWeights | None = None
        self.profiles: list[ShadowWeights] = []
        self.updates = 0
        self.last_snapshot: int | None = None
        self._steps = OptimizerSteps()
        self._loaded: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------------- updates
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        params = list(pl_module.network.trainable_parameters())
        device = "cpu" if self.config.device == EMADevice.cpu else None
        self.ema = ShadowWeights(params, device)
        self.profiles = [ShadowWeights(params, device) for _ in self.gammas]
        if self._loaded is not None:
            self._load(self._loaded)
            self._loaded = None
        elif trainer.global_step > 0:
            log.warning("ema: the training state holds no EMA of the LoRA; it starts from the resumed weights")
        if self.gammas and trainer.is_global_zero:
            self._copy_earlier_snapshots(trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._steps.stepped(trainer) or self.ema is None:
            return
        step = trainer.global_step
        if step % self.config.every_n_steps == 0:
            self.update(list(pl_module.network.trainable_parameters()))
        if self.gammas and step % self.config.snapshot_every == 0:
            self.snapshot(trainer, pl_module)

    def update(self, params: list) -> None:
        """One EMA update of θ̄ (and of the post-hoc power-function EMAs)."""
        self.updates += 1
        c = self.config
        self.ema.update(params, ema_decay(self.updates, c.decay, c.power, c.inv_gamma))
        for profile, gamma in zip(self.profiles, self.gammas, strict=True):
            profile.update(params, power_beta(self.updates, gamma))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.gammas and self.ema is not None and self.last_snapshot != trainer.global_step:
            self.snapshot(trainer, pl_module)

    # ---------------------------------------------------------------------------------------------- weights
    def swapped(self, network) -> contextlib.AbstractContextManager:
        """θ̄ inside the network for the block (the trained weights afterwards, bit for bit)."""
        return self.ema.swapped(list(network.trainable_parameters()))

    def file_weights(self, network) -> contextlib.AbstractContextManager:
        """θ̄ inside the network for writing its files: float32 values even when the LoRA trains in bf16/fp16."""
        return self.ema.exact(list(network.trainable_parameters()))

    def evaluation_swap(self, pl_module: L.LightningModule) -> contextlib.AbstractContextManager:
        """What sample images are made with (:mod:`sdlora.callbacks.eval_weights`): θ̄ with ``ema.use_for_eval``."""
        if not self.config.use_for_eval or self.ema is None:
            return contextlib.nullcontext()
        return self.swapped(pl_module.network)

    def file_metadata(self) -> dict[str, str]:
        """Keys of ``<name>-ema`` files (kohya writes none for an EMA; ``ss_ema_decay`` as the issue names it)."""
        c = self.config
        return {"ss_ema_decay": str(c.decay), "ss_ema_power": str(c.power), "ss_ema_inv_gamma": str(c.inv_gamma),
                "ss_ema_every_n_steps": str(c.every_n_steps), "ss_ema_updates": str(self.updates)}  # fmt: skip

    # ------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validation is not None:
            self.validation.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.validation is None or self.ema is None:
            return
        with self.swapped(pl_module.network), trainer.precision_plugin.val_step_context():
            self.validation.update(pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        v = self.validation
        if v is None or not v.count:
            return
        v.history.append((trainer.global_step, v.value))
        pl_module.log("val/loss_ema", v.value, on_epoch=True, sync_dist=True)
        for label, value in v.band_values().items():
            pl_module.log(f"val/loss_ema_{label}", value, on_epoch=True, sync_dist=True)

    # -------------------------------------------------------------------------------------------- post-hoc
    def snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write every post-hoc EMA as ``posthoc_ema/sigma<σ>-step<N>.safetensors`` (global rank 0)."""
        self.last_snapshot = trainer.global_step
        if not trainer.is_global_zero or trainer.fast_dev_run or self.run_dir is None:
            return
        from sdlora.network.io import save_lora

        network, step = pl_module.network, trainer.global_step
        params = list(network.trainable_parameters())
        base = self.metadata.for_save(network, pl_module.components.prediction_type, step, trainer.current_epoch)
        for profile, sigma, gamma in zip(self.profiles, self.config.posthoc_sigma_rels, self.gammas, strict=True):
            extra = {"ss_ema_sigma_rel": str(sigma), "ss_ema_gamma": repr(gamma), "ss_ema_updates": str(self.updates)}
            with profile.exact(params):
                path = self.run_dir / POSTHOC_DIR / f"{snapshot_name(sigma, step)}.safetensors"
                save_lora(path, network.kohya_tensors(), {**base, **extra})
        log.info("Post-hoc EMA snapshots of step %d in %s", step, self.run_dir / POSTHOC_DIR)

    def _copy_earlier_snapshots(self, step: int) -> None:
        """A resumed run: the snapshots up to ``step`` of the run it resumes, into this run's folder."""
        if self.resumed_from is None or self.run_dir is None or step == 0:
            return
        source = Path(self.resumed_from).parent / POSTHOC_DIR
        target = self.run_dir / POSTHOC_DIR
        if not source.is_dir() or source.resolve() == target.resolve():
            return
        target.mkdir(parents=True, exist_ok=True)
        copied = 0
        for path in sorted(source.glob("sigma*-step*.safetensors")):
            taken = snapshot_step(path)
            if taken is not None and taken <= step and not (target / path.name).exists():
                shutil.copy2(path, target / path.name)
                copied += 1
        if copied:
            log.info("Copied %d post-hoc EMA snapshots (up to step %d) from %s", copied, step, source)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        return {"updates": self.updates, "ema": self.ema.state_dict(), "last_snapshot": self.last_snapshot,
                "profiles": [p.state_dict() for p in self.profiles]}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict if state_dict else None

    def _load(self, state: dict[str, Any]) -> None:
        from sdlora.errors import SdloraError

        try:
            self.ema.load_state_dict(state["ema"])
            profiles = state.get("profiles") or []
            if len(profiles) == len(self.profiles):
                for profile, tensors in zip(self.profiles, profiles, strict=True):
                    profile.load_state_dict(tensors)
            elif self.profiles:
                log.warning("ema.posthoc: the training state holds no post-hoc EMAs; they start from the weights")
        except ValueError as exc:
            raise SdloraError(f"resume: {exc} (resume with the network options it was trained with)") from None
        self.updates = int(state["updates"])
        self.last_snapshot = state.get("last_snapshot")
