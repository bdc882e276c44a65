"""LoRATrainingModule: one diffusion training step on a frozen SD model with LoRA modules injected.

training_step (docs/kohya.md §4.1):
  pixels ──VAE (frozen, fp32 autocast off)──▶ latents x₀ = sample(q(z|x)) · latent_scale
  captions ──family.encode_text──▶ cross-attention states (+ pooled, time ids for SDXL)
  ε ~ N(0, I), t ~ U{min_timestep, …, max_timestep − 1}, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε
  target = ε or v;  loss = mean_B( w_b · mean_{C,H,W} (unet(x_t, t) − target)² )
Only the LoRA parameters are trainable. All randomness of the step comes from one generator seeded from
``seed`` (and the global torch RNG for the LoRA dropouts), so a run is reproducible.

The logged losses are those of the global batch (the mean over the processes of a distributed run).
A non-finite loss stops training (:class:`NonFiniteLoss`, a state is saved first when states are on), or with
``trainer.skip_nonfinite`` the batch is skipped: ``training_step`` returns None, so it gives no gradient (the other
micro-batches of an accumulated step still count), and ``train/nonfinite_skipped`` counts it.

Host syncs (docs/performance.md "Per-step host work"): the loss leaves the device once per batch, copied right
after the forward pass (pinned, non-blocking on CUDA, an event recorded behind it) and read in
``on_before_optimizer_step`` — after the backward pass has been queued and before the optimizer step, so a non-finite
loss still stops the run before it reaches the weights, without draining the GPU's queue. Only
``trainer.skip_nonfinite`` reads it at once (whether to skip must be known before backward). The scalars are handed
to Lightning (``self.log``) only on the steps its logger writes (``trainer.log_every_n_steps``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from sdlora.data.batch import Batch
from sdlora.data.posterior import sample_posterior
from sdlora.diffusion.loss import weighted_mean
from sdlora.diffusion.objective import DiffusionObjective, Noised
from sdlora.distributed.share import BatchShare
from sdlora.errors import NonFiniteLoss, NonFiniteWeights, SdloraError
from sdlora.lightning_compat import logs_this_step
from sdlora.lit.running_mean import RunningMean
from sdlora.lit.val_loss import ValidationLoss
from sdlora.models.family import Components, ModelFamily, TextConditioning
from sdlora.models.host_parts import HostParts, move_parts, parts_on
from sdlora.network.io import NONFINITE_CAUSES, all_finite
from sdlora.network.network import LoRANetwork
from sdlora.optim.factory import build_lr_scheduler

log = logging.getLogger("sdlora")
#: The network's per-step draws (DyLoRA) use seed + this, a stream apart from the noise generator's.
DRAW_SEED_OFFSET = 1_000_003


def nonfinite_message(value: float, paths: list[str], step: int, epoch: int) -> str:
    """What to tell the user about a non-finite loss in optimizer step ``step`` (1-based) of epoch ``epoch``."""
    return (
        f"the loss became {value} in step {step} (epoch {epoch}) on the batch of {', '.join(paths)}. Likely causes: a "
        "learning rate that is too high (optimizer.lr, network.unet_lr, network.text_encoder_lr), fp16 overflow (try "
        "precision=bf16_mixed or precision=fp32; SDXL's VAE needs float32: precision.no_half_vae=true), or a corrupt "
        "image in that batch. trainer.skip_nonfinite=true skips such batches instead of stopping."
    )


@dataclass
class PendingLoss:
    """A batch's (local, global) loss on its way to the host: read when its event has completed."""

    values: torch.Tensor  # [2] float32: this process's loss, the global batch's
    event: Any  # a torch.cuda.Event recorded after the copy, or None when the values are on the host
    paths: list[str]

    @classmethod
    def copy(cls, local: torch.Tensor, global_: torch.Tensor, paths: list[str]) -> PendingLoss:
        values = torch.stack([local.float(), global_.float()])  # [2]
        if values.device.type != "cuda":
            return cls(values, None, paths)
        host = values.to("cpu", non_blocking=True)  # into pinned memory, behind the forward pass
        event = torch.cuda.Event()
        event.record()
        return cls(host, event, paths)

    def read(self) -> tuple[float, float]:
        if self.event is not None:
            self.event.synchronize()  # waits for the forward pass and the copy only, not for what is queued after
        local, value = self.values.tolist()
        return local, value


class LoRATrainingModule(L.LightningModule):
    def __init__(
        self,
        family: ModelFamily,
        components: Components,
        network: LoRANetwork,
        *,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any],
        learning_rates: dict[str, float | None],
        total_steps: int,
        batches_per_epoch: int,
        objective: DiffusionObjective,
        seed: int = 0,
        validation: ValidationLoss | None = None,
        skip_nonfinite: bool = False,
        max_skipped: int | None = None,
        host: HostParts | None = None,
    ) -> None:
        super().__init__()
        self.family = family
        self.components = components
        self.unet = components.unet
        # submodules move with the module; the host parts (their caches made) stay out of it (models/host_parts.py)
        self.host = host or HostParts()
        if not self.host.vae:
            self.vae = components.vae
        if not self.host.text_encoders:
            self.text_encoders = nn.ModuleList(components.text_encoders)
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.learning_rates = learning_rates
        self.total_steps = total_steps
        self.objective = objective
        self.seed = seed
        self.validation = validation
        self.train_text_encoder = any(not n.startswith("lora_unet") for n in network.modules)
        self.loss_average = RunningMean(batches_per_epoch)
        self.epoch_losses: list[float] = []
        self.generator: torch.Generator | None = None
        self.skip_nonfinite = skip_nonfinite  # [trainer.skip_nonfinite]
        self.max_skipped = max_skipped  # batches; more skipped ones fail the run [trainer.max_skipped_fraction]
        self.nonfinite_skipped = 0
        self.pending_losses: list[PendingLoss] = []  # read in on_before_optimizer_step

    # ------------------------------------------------------------------------------------------ modes, RNG
    def train(self, mode: bool = True) -> LoRATrainingModule:
        """Frozen parts stay in eval mode (train mode only where gradient checkpointing needs it)."""
        super().train(mode)
        checkpointing = mode and self.family.gradient_checkpointing
        self.components.vae.eval()
        self.unet.train(checkpointing)
        for encoder in self.components.text_encoders:
            encoder.train(checkpointing and self.train_text_encoder)
        self.network.set_training(mode)
        return self

    def unsharded_modules(self) -> list[nn.Module]:
        """What a sharding strategy (trainer=fsdp) must keep whole on every process: the LoRA branches (trained,
        saved and regularised whole) and the VAE (called through encode/decode, which FSDP does not hook) unless it
        waits in host memory."""
        return [*self.network.adapter_modules(), *([] if self.host.vae else [self.components.vae])]

    def host_parts_here(self) -> Any:
        """A context in which the host parts are on this module's device (sampling)."""
        return parts_on(self.host, self.components, self.device)

    @property
    def batch_share(self) -> BatchShare:
        """This process's rows of the global batch (:mod:`sdlora.distributed.share`; one process: all of them)."""
        trainer = self._trainer
        return BatchShare(trainer.global_rank, trainer.world_size) if trainer is not None else BatchShare()

    def on_fit_start(self) -> None:
        if self.generator is None:
            self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.network.seed_draws(self.seed + DRAW_SEED_OFFSET)

    # ----------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """[B, 3, H, W] in [−1, 1] → scaled latents [B, 4, H/8, W/8] (float32): a sample of the VAE posterior, or
        its mean with ``sample=False`` (validation)."""
        vae = self.components.vae
        with torch.autocast(device_type=self.device.type, enabled=False):
            posterior = vae.encode(pixels.to(device=self.device, dtype=vae.dtype)).latent_dist
            if not sample:
                return posterior.mean.float() * self.family.latent_scale
            latents = sample_posterior(posterior.mean, posterior.std, self.generator, self.batch_share)
        return latents * self.family.latent_scale

    def batch_latents(self, batch: Batch) -> torch.Tensor:
        """Scaled latents of a batch: sampled from the cached posterior (data.cache_latents) or encoded now."""
        if batch.latent_mean is not None:
            latents = sample_posterior(batch.latent_mean, batch.latent_std, self.generator, self.batch_share)
            return latents * self.family.latent_scale
        return self.encode_latents(batch.pixels)

    def batch_text(self, batch: Batch) -> TextConditioning:
        """Text conditioning of a batch: cached text-encoder outputs when the batch carries them, else encoded now."""
        if batch.text_hidden is not None:
            return TextConditioning(batch.text_hidden, batch.text_pooled)
        return self.encode_text(batch.captions)

    def encode_text(self, captions: list[str]) -> TextConditioning:
        if self.train_text_encoder:
            return self.family.encode_text(self.components, captions)
        with torch.no_grad():
            return self.family.encode_text(self.components, captions)

    def predict(self, noised: Noised, text: TextConditioning, size_cond: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction [B, 4, h, w] (ε or v) for noised latents under a text conditioning; the one U-Net
        call of training and validation."""
        unet_dtype = next(self.unet.parameters()).dtype
        inputs = self.family.unet_inputs(text, size_cond.to(self.device))
        return self.unet(noised.noisy.to(unet_dtype), noised.timesteps, **inputs).sample

    def diffusion_loss(self, batch: Batch) -> torch.Tensor:
        """The per-sample diffusion loss [B] of a batch."""
        latents = self.batch_latents(batch)  # [B, 4, h, w]
        text = self.batch_text(batch)
        noised = self.batch_share.noise(self.objective, latents, self.generator)
        prediction = self.predict(noised, text, batch.size_cond)  # [B, 4, h, w]
        return self.objective.loss(prediction, noised, batch.mask)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        self.network.begin_step()  # DyLoRA: this step's trainable rows
        per_sample = self.diffusion_loss(batch)
        loss = weighted_mean(per_sample, batch.loss_weight)
        if not self.skip_nonfinite:  # read in on_before_optimizer_step, without a sync here
            local = loss.detach()
            self.pending_losses.append(PendingLoss.copy(local, self.mean_over_processes(local), list(batch.paths)))
            return loss
        local, value = self.global_loss(loss)
        if not math.isfinite(value):
            message = self._nonfinite(local, value, batch.paths)
            self.count_skipped(1)
            log.warning("trainer.skip_nonfinite: skipped a batch: %s", message.split(". Likely causes")[0])
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), on_step=True, on_epoch=False)
            return None
        self._record(value)
        return loss

    def _nonfinite(self, local: float, value: float, paths: list[str]) -> str:
        """The message for a non-finite loss; raises :class:`NonFiniteWeights` when the LoRA weights, not the batch,
        are broken (also under ``trainer.skip_nonfinite``: skipping batches would not mend them)."""
        if not all_finite(list(self.network.trainable_parameters())):
            raise NonFiniteWeights(
                f"the loss became {value} in step {self.global_step + 1} because the LoRA weights hold NaN or "
                f"infinite values after step {self.global_step}; {NONFINITE_CAUSES}"
            )
        paths = paths if not math.isfinite(local) else ["another process's images of this global batch"]
        return nonfinite_message(value, paths, self.global_step + 1, self.current_epoch + 1)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Read the losses of the step's batches (they are on the host by now); a non-finite one stops the run before
        the optimizer changes the weights."""
        self.settle_losses()
        if self._trainer is None or logs_this_step(self._trainer):
            self._log_step()

    def settle_losses(self) -> None:
        """Bring the pending batch losses into the running mean and the epoch's losses, in order; a non-finite loss
        raises :class:`NonFiniteLoss` naming its step and images."""
        pending, self.pending_losses = self.pending_losses, []
        for loss in pending:
            local, value = loss.read()
            if not math.isfinite(value):
                raise NonFiniteLoss(self._nonfinite(local, value, loss.paths))
            self._record(value)

    def mean_over_processes(self, local: torch.Tensor) -> torch.Tensor:
        """The global batch's loss (a mean over the processes; queued, not waited for). One process: ``local``."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return local
        return trainer.strategy.reduce(local.clone(), reduce_op="mean")

    def count_skipped(self, batches: int) -> None:
        """Count batches that gave no update (a non-finite loss, a rolled-back step); more than
        ``trainer.max_skipped_fraction`` of the run's batches fail it."""
        self.nonfinite_skipped += batches
        if self.max_skipped is not None and self.nonfinite_skipped > self.max_skipped:
            total = self.total_steps * (self._trainer.accumulate_grad_batches if self._trainer is not None else 1)
            raise SdloraError(
                f"{self.nonfinite_skipped} of the run's {total} batches gave no update (a non-finite loss or weights), "
                f"more than trainer.max_skipped_fraction allows ({self.max_skipped}): the run does not train. Lower "
                "the learning rate, check the images named in the warnings, or use precision=bf16_mixed/fp32"
            )

    def global_loss(self, loss: torch.Tensor) -> tuple[float, float]:
        """This process's loss and the mean over the processes (the global batch's loss; the same on every process,
        so a non-finite loss stops or is skipped on all of them together). One process: both are ``loss``."""
        local = loss.detach()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            value = local.item()
            return value, value
        return local.item(), float(trainer.strategy.reduce(local.clone(), reduce_op="mean").item())

    # ----------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        if self.validation is not None:
            self.validation.reset()
            move_parts(self.host, self.components, self.device)  # validation encodes its images and captions

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.validation is not None:
            self.validation.update(self, batch)

    def on_validation_epoch_end(self) -> None:
        if self.validation is None:
            return
        move_parts(self.host, self.components, "cpu")
        if self.validation.count:
            value = self.validation.value
            self.validation.history.append((self.global_step, value))
            # every process evaluates the whole validation set: the mean over them is the same value
            self.log("val/loss", value, on_epoch=True, prog_bar=True, sync_dist=True)
            for label, band_value in self.validation.band_values().items():  # [validation.timestep_bands]
                self.log(f"val/loss_{label}", band_value, on_epoch=True, sync_dist=True)

    # -------------------------------------------------------------------------------------------- logging
    def _record(self, loss: float) -> None:
        self.loss_average.update(loss)
        self.epoch_losses.append(loss)

    def _log_step(self) -> None:
        """The step's scalars, handed to Lightning on the steps its logger writes (each ``self.log`` costs about
        0.1–0.3 ms of Python)."""
        if not self.epoch_losses:
            return
        self.log("loss/current", self.epoch_losses[-1], on_step=True, on_epoch=False)
        self.log("loss/average", self.loss_average.mean, on_step=True, on_epoch=False, prog_bar=True)
        if self.nonfinite_skipped:  # cumulative, from the first skipped batch on
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), on_step=True, on_epoch=False)
        groups = getattr(self.optimizers(), "param_groups", [])
        for group in groups:
            self.log(f"lr/{group['name']}", group["lr"], on_step=True, on_epoch=False)
        if groups and "d" in groups[0]:  # D-Adaptation / Prodigy: the adapted step size d·lr, as kohya logs it
            self.log("lr/d*lr", float(groups[0]["d"]) * groups[0]["lr"], on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        self.settle_losses()
        if self.epoch_losses:
            epoch_loss = sum(self.epoch_losses) / len(self.epoch_losses)  # global-batch losses: equal on every process
            self.log("loss/epoch", epoch_loss, on_epoch=True, sync_dist=True)
        self.epoch_losses = []

    # ---------------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict:
        lrs = self.learning_rates
        groups = self.network.param_groups(lrs["default"], lrs.get("unet"), lrs.get("text_encoder"))
        optimizer = self.optimizer_factory(groups)
        scheduler = build_lr_scheduler(self.scheduler_factory, optimizer, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
