"""Factories for the objects of a training run (:mod:`sdlora.run` wires them): the LightningModule and its
objective, the Trainer, the callbacks, the validation schedule and the data-plan extras."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sdlora import __version__
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora")


# ------------------------------------------------------------------------------------------------- before loading
def check_schedule(cfg: DictConfig, total_steps: int) -> None:
    """The optimizer and schedule built once over the run's real horizon (e.g. warm-up + decay must fit in it)."""
    from sdlora.optim.checks import build_problems

    problems = build_problems(cfg.optimizer, cfg.scheduler, total_steps)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)


def use_masks(cfg: DictConfig, data) -> None:
    """``loss.masked``: give the dataset its mask source and warn about images that have no mask."""
    from sdlora.data.masks import MaskSource, mask_warnings

    if cfg.loss.masked:
        data.dataset.masks = MaskSource(cfg.data.mask_dir)
        used = [r.path for r, n in zip(data.plan.records, data.plan.repeats, strict=True) if n > 0]
        data.plan.warnings += mask_warnings(data.dataset.masks, used)


def validation_summary(cfg: DictConfig, validation) -> dict[str, Any]:
    """The validation part of the data plan (images, timesteps, schedule)."""
    from sdlora.diffusion.validation import validation_timesteps

    if validation is None:
        return {"images": 0, "text": "off (set validation.dir or validation.split to get val/loss)"}
    timesteps = validation_timesteps(cfg.loss.min_timestep, cfg.loss.max_timestep, cfg.validation.num_timesteps)
    every = cfg.validation.every_n_steps
    when = f"every {every} steps and at the end" if every else "at the end of training"
    text = f"{validation.num_images} images from {validation.source} at timesteps {timesteps}, {when}"
    paths = [str(r.path) for r in validation.dataset.records]
    return {"images": validation.num_images, "paths": paths, "timesteps": timesteps, "every_n_steps": every,
            "text": text}  # fmt: skip


# ------------------------------------------------------------------------------------------------------- module
def make_objective(cfg: DictConfig, prediction_type: str):
    """The loss of the ``loss`` group for the loaded model; options that contradict its prediction type stop here."""
    from sdlora.diffusion.objective import DiffusionObjective, LossSettings, prediction_type_problems

    settings = LossSettings.from_config(cfg.loss)
    problems = prediction_type_problems(settings, prediction_type)
    if problems:
        raise SdloraError(f"the loss options do not fit this {prediction_type} model:", problems)
    if settings.zero_terminal_snr and prediction_type != "v_prediction":
        log.warning("loss.zero_terminal_snr is meant for v-prediction models (set model.v_parameterization=true)")
    return DiffusionObjective(prediction_type, settings)


def make_module(cfg: DictConfig, family, components, network, length, validate: bool = False):
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.lit.validation import ValidationLoss
    from sdlora.optim.factory import instantiate_partial

    validation = None
    if validate:
        v = cfg.validation
        validation = ValidationLoss(cfg.loss.min_timestep, cfg.loss.max_timestep, v.num_timesteps, v.seed)
    return LoRATrainingModule(
        family,
        components,
        network,
        optimizer=instantiate_partial(cfg.optimizer),
        scheduler=instantiate_partial(cfg.scheduler),
        learning_rates={
            "default": cfg.optimizer.lr,
            "unet": cfg.network.unet_lr,
            "text_encoder": cfg.network.text_encoder_lr,
        },
        total_steps=length.total_steps,
        batches_per_epoch=length.batches_per_epoch,
        objective=make_objective(cfg, components.prediction_type),
        seed=cfg.seed,
        validation=validation,
        skip_nonfinite=cfg.trainer.skip_nonfinite,
    )


def final_validation(trainer, module, datamodule) -> dict[str, float]:
    """val/loss after the last step (evaluated now unless the last step was just evaluated), and the best one."""
    history = module.validation.history
    if not history or history[-1][0] != trainer.global_step:
        trainer.validate(module, dataloaders=datamodule.validation_loader(), verbose=False)
    return {"val_loss": history[-1][1], "best_val_loss": min(value for _, value in history)}


# ---------------------------------------------------------------------------------------------------- callbacks
def network_callbacks(cfg: DictConfig) -> list:
    """Callbacks of the network options: max-norm regularisation [scale_weight_norms]."""
    from sdlora.callbacks.max_norm import MaxNormRegularization

    return [MaxNormRegularization(cfg.network.scale_weight_norms)] if cfg.network.scale_weight_norms > 0 else []


def precision_callbacks(cfg: DictConfig, precision) -> list:
    """Stochastic rounding of bf16 updates (``precision.stochastic_rounding``)."""
    if not precision.stochastic_rounding:
        return []
    from sdlora.precision.rounding import StochasticRounding

    return [StochasticRounding(seed=cfg.seed)]


def data_plan_callback(plan):
    """The data plan (bucket histogram, text) in TensorBoard at fit start."""
    from sdlora.callbacks.data_plan import LogDataPlan

    return LogDataPlan(plan)


def make_saver(cfg: DictConfig, run_dir: Path, family, data, resolution, run_info: dict[str, Any], state=None):
    """The callback writing LoRA files and states, with kohya's metadata for this run (``run_info`` gets the network
    later); ``state`` is the :class:`~sdlora.callbacks.state.TrainingState` callback."""
    from sdlora.callbacks.save_lora import SaveLoRA, SaveSchedule
    from sdlora.network.io import SAVE_DTYPES
    from sdlora.network.metadata import modelspec_metadata, training_metadata
    from sdlora.utils.hashing import file_sha256

    model_hash = _hash_in_background(family.pretrained, file_sha256)
    run_info.update(resolution=resolution, version=__version__, model_path=family.pretrained, vae_path=family.vae)

    def metadata(prediction_type: str) -> dict[str, str]:
        run = {**run_info, "model_sha256": model_hash.result() if model_hash else None}
        return {
            **training_metadata(cfg, family, prediction_type, data.plan, run),
            **modelspec_metadata(family, prediction_type, cfg.save.output_name, resolution, cfg),
        }

    save = cfg.save
    save_precision = save.precision.value if save.precision is not None else None
    schedule = SaveSchedule(
        save.every_n_steps, save.every_n_epochs, save.last_n_steps, save.last_n_epochs, save.state,
        save.last_n_steps_state, save.last_n_epochs_state, epochs=data.plan.length.epochs,
    )  # fmt: skip
    return SaveLoRA(
        run_dir, save.output_name, metadata, data.plan.length.steps_per_epoch,
        save_format=save.format.value, dtype=SAVE_DTYPES[save_precision], also_diffusers=save.also_diffusers,
        schedule=schedule, state_kind=(lambda kind: setattr(state, "kind", kind)) if state is not None else None,
    )  # fmt: skip


def state_callbacks(cfg: DictConfig, data) -> list:
    """What a training state holds beyond Lightning's checkpoint (:class:`TrainingState`), and the sampler's epoch."""
    from sdlora.callbacks.state import TrainingState
    from sdlora.data.datamodule import SamplerEpoch
    from sdlora.state.fingerprint import fingerprint

    return [TrainingState(fingerprint(cfg, data.plan)), SamplerEpoch(data.sampler)]


def sample_callbacks(cfg: DictConfig, family, run_dir: Path) -> list:
    """Sample images during training (``sample.prompts``)."""
    if not cfg.sample.prompts:
        return []
    from sdlora.callbacks.sampling import SampleImages

    return [SampleImages.from_config(cfg, family, run_dir)]


def check_resume(cfg: DictConfig, data):
    """``resume``: the state to continue (its settings compared with this config), or None."""
    if not cfg.resume:
        return None
    from sdlora.state.fingerprint import fingerprint
    from sdlora.state.resume import check_resume as check

    return check(cfg.resume, fingerprint(cfg, data.plan), cfg.resume_allow_changes)


def _hash_in_background(location: str | None, hasher) -> Future | None:
    """SHA-256 of a single-file base model, computed while training runs (kohya's ss_new_sd_model_hash)."""
    if not location or not Path(location).expanduser().is_file():
        return None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlora-hash")
    future = executor.submit(hasher, Path(location).expanduser())
    executor.shutdown(wait=False)
    return future


# ------------------------------------------------------------------------------------------------------ trainer
def validation_schedule(cfg: DictConfig, validation) -> dict[str, Any]:
    """Trainer arguments that evaluate every ``validation.every_n_steps`` optimizer steps (counted in batches)."""
    every = cfg.validation.every_n_steps
    if validation is None or not every:
        return {}
    return {"val_check_interval": every * cfg.trainer.accumulate_grad_batches, "check_val_every_n_epoch": None}


def make_trainer(cfg: DictConfig, run_dir: Path, length, callbacks: list, extra_kwargs: dict):
    """The Lightning Trainer; its limits are the plan's (steps and epochs, whichever the config makes first)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import TQDMProgressBar

    from sdlora.distributed.world import make_strategy
    from sdlora.state.checkpoint_io import StateFolderIO

    t = cfg.trainer
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger else False
    strategy = make_strategy(t)
    extra_kwargs = {**extra_kwargs, "plugins": [*extra_kwargs.get("plugins", []), StateFolderIO()]}
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=strategy,
        num_nodes=t.num_nodes,
        max_steps=length.total_steps,
        max_epochs=length.epochs,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val or None,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        fast_dev_run=t.fast_dev_run,
        logger=logger,
        callbacks=[TQDMProgressBar(), *callbacks] if t.enable_progress_bar else callbacks,
        enable_checkpointing=False,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        **extra_kwargs,
    )
