"""Wire the objects of a training run together and fit (DESIGN §1). Clever code lives in the named modules.

validate config → family adapter → data plan (printed, data_plan.json) → load model → inject LoRA →
LightningModule + callbacks + logger → Trainer.fit → LoRA file in the run folder.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sdlora import __version__
from sdlora.errors import SdloraError
from sdlora.utils.atomic import atomic_write_json
from sdlora.utils.quiet import quiet_third_party, tidy_lightning_logging

log = logging.getLogger("sdlora")


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a LoRA as ``cfg`` says, writing everything into ``run_dir``; returns a summary of the run."""
    quiet_third_party()
    from hydra.utils import instantiate

    from sdlora.config.validate import validate
    from sdlora.data.build import build_training_data
    from sdlora.data.validation import validation_from_config

    run_dir = Path(run_dir)
    validate(cfg)
    family = instantiate(cfg.model)
    resolution = family.resolution(cfg.data.resolution)
    trainer_cfg = cfg.trainer
    data = build_training_data(
        cfg.data, resolution, cfg.seed, trainer_cfg.accumulate_grad_batches, trainer_cfg.max_steps,
        trainer_cfg.max_epochs, bucket_defaults=family.default_bucket_reso,
        prior_loss_weight=cfg.loss.prior_loss_weight, validation_split=cfg.validation.split,
        validation_seed=cfg.validation.seed,
    )  # fmt: skip
    validation = validation_from_config(cfg, data.held_out, resolution, family.default_bucket_reso)
    _use_masks(cfg, data)
    plan = data.plan.to_json()
    plan["validation"] = _validation_summary(cfg, validation)
    log.info("Run folder: %s\n%s\n  validation: %s", run_dir, data.plan.format(), plan["validation"]["text"])
    atomic_write_json(run_dir / "data_plan.json", plan)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "total_steps": data.plan.length.total_steps}
    if cfg.dry_run:
        log.info("dry_run=true: stopping before the model is loaded")
        return summary
    return _fit(cfg, run_dir, family, data, validation, resolution, summary)


def _use_masks(cfg: DictConfig, data) -> None:
    """``loss.masked``: give the dataset its mask source and warn about images that have no mask."""
    from sdlora.data.masks import MaskSource, mask_warnings

    if cfg.loss.masked:
        data.dataset.masks = MaskSource(cfg.data.mask_dir)
        used = [r.path for r, n in zip(data.plan.records, data.plan.repeats, strict=True) if n > 0]
        data.plan.warnings += mask_warnings(data.dataset.masks, used)


def _validation_summary(cfg: DictConfig, validation) -> dict[str, Any]:
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


def _fit(cfg: DictConfig, run_dir: Path, family, data, validation, resolution, summary: dict) -> dict[str, Any]:
    import lightning as L

    from sdlora.data.datamodule import LoRADataModule
    from sdlora.models.loading import configure_memory
    from sdlora.network.build import build_network

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_info: dict[str, Any] = {}  # run facts for the metadata, completed once the network exists
    saver = _make_saver(cfg, run_dir, family, data, resolution, run_info)
    trainer = _make_trainer(cfg, run_dir, data.plan.length, [*_network_callbacks(cfg), saver], validation)
    components = family.load(_weight_dtype(cfg, trainer))
    _prepare_data(cfg, run_dir, family, components, data, trainer)
    network = build_network(family, components, cfg.network)
    run_info["network"] = network
    log.info(
        "Model: %s from %s (%s). LoRA: %d modules, %s trainable parameters",
        family.name, components.source, components.prediction_type, len(network), f"{network.num_parameters():,}",
    )  # fmt: skip
    configure_memory(family, components, trainer.strategy.root_device.type)
    module = _make_module(cfg, family, components, network, data.plan.length, validation is not None)
    datamodule = LoRADataModule(data, cfg.data.num_workers, validation, cfg.validation.every_n_steps is not None)
    trainer.fit(module, datamodule=datamodule)
    summary.update(steps=trainer.global_step, loss=module.loss_average.mean, files=[str(p) for p in saver.saved])
    if validation is not None:
        summary.update(_final_validation(trainer, module, datamodule))
    for path in saver.saved:
        log.info("Saved %s", path)
    return summary


def _prepare_data(cfg: DictConfig, run_dir: Path, family, components, data, trainer) -> None:
    """Latent / text-encoder caches (data.cache_*) and the data plan in TensorBoard at fit start."""
    from sdlora.callbacks.data_plan import LogDataPlan
    from sdlora.data.caching import prepare_caches

    trainer.callbacks.append(LogDataPlan(data.plan))
    prepare_caches(cfg.data, data.dataset, family, components, run_dir, trainer.strategy.root_device)


def _weight_dtype(cfg: DictConfig, trainer):
    """The frozen model's dtype: the precision option's, unless Lightning fell back to another autocast dtype."""
    import torch

    configured = getattr(torch, cfg.precision.weight_dtype)
    if cfg.precision.trainer_precision == "16-mixed" and trainer.precision == "bf16-mixed":
        log.warning("precision=fp16_mixed: fp16 autocast is not available on this device; using bf16 instead")
        return torch.bfloat16
    return configured


def _make_objective(cfg: DictConfig, prediction_type: str):
    """The loss of the ``loss`` group for the loaded model; options that contradict its prediction type stop here."""
    from sdlora.diffusion.objective import DiffusionObjective, LossSettings, prediction_type_problems

    settings = LossSettings.from_config(cfg.loss)
    problems = prediction_type_problems(settings, prediction_type)
    if problems:
        raise SdloraError(f"the loss options do not fit this {prediction_type} model:", problems)
    if settings.zero_terminal_snr and prediction_type != "v_prediction":
        log.warning("loss.zero_terminal_snr is meant for v-prediction models (set model.v_parameterization=true)")
    return DiffusionObjective(prediction_type, settings)


def _final_validation(trainer, module, datamodule) -> dict[str, float]:
    """val/loss after the last step (evaluated now unless the last step was just evaluated), and the best one."""
    history = module.validation.history
    if not history or history[-1][0] != trainer.global_step:
        trainer.validate(module, dataloaders=datamodule.validation_loader(), verbose=False)
    return {"val_loss": history[-1][1], "best_val_loss": min(value for _, value in history)}


def _make_module(cfg: DictConfig, family, components, network, length, validate: bool = False):
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
        objective=_make_objective(cfg, components.prediction_type),
        seed=cfg.seed,
        validation=validation,
    )


def _network_callbacks(cfg: DictConfig) -> list:
    """Callbacks of the network options: max-norm regularisation [scale_weight_norms]."""
    from sdlora.callbacks.max_norm import MaxNormRegularization

    return [MaxNormRegularization(cfg.network.scale_weight_norms)] if cfg.network.scale_weight_norms > 0 else []


def _make_saver(cfg: DictConfig, run_dir: Path, family, data, resolution, run_info: dict[str, Any]):
    """The callback writing LoRA files, with kohya's metadata for this run."""
    from sdlora.callbacks.save_lora import SaveLoRA
    from sdlora.network.io import SAVE_DTYPES
    from sdlora.network.metadata import file_sha256, modelspec_metadata, training_metadata

    model_hash = _hash_in_background(family.pretrained, file_sha256)
    run_info.update(
        resolution=resolution, version=__version__, model_path=family.pretrained, vae_path=family.vae,
    )  # fmt: skip

    def metadata(prediction_type: str) -> dict[str, str]:
        run = {**run_info, "model_sha256": model_hash.result() if model_hash else None}
        return {
            **training_metadata(cfg, family, prediction_type, data.plan, run),
            **modelspec_metadata(family, prediction_type, cfg.save.output_name, resolution, cfg),
        }

    save_precision = cfg.save.precision.value if cfg.save.precision is not None else None
    return SaveLoRA(
        run_dir, cfg.save.output_name, metadata, data.plan.length.steps_per_epoch,
        save_format=cfg.save.format.value, dtype=SAVE_DTYPES[save_precision], also_diffusers=cfg.save.also_diffusers,
    )  # fmt: skip


def _hash_in_background(location: str | None, hasher) -> Future | None:
    """SHA-256 of a single-file base model, computed while training runs (kohya's ss_new_sd_model_hash)."""
    if not location or not Path(location).expanduser().is_file():
        return None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlora-hash")
    future = executor.submit(hasher, Path(location).expanduser())
    executor.shutdown(wait=False)
    return future


def _validation_schedule(cfg: DictConfig, validation) -> dict[str, Any]:
    """Trainer arguments that evaluate every ``validation.every_n_steps`` optimizer steps (counted in batches)."""
    every = cfg.validation.every_n_steps
    if validation is None or not every:
        return {}
    return {"val_check_interval": every * cfg.trainer.accumulate_grad_batches, "check_val_every_n_epoch": None}


def _make_trainer(cfg: DictConfig, run_dir: Path, length, callbacks: list, validation=None):
    """The Lightning Trainer; its limits are the plan's (steps and epochs, whichever the config makes first)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import TQDMProgressBar

    t = cfg.trainer
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger else False
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=cfg.precision.trainer_precision,
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
        **_validation_schedule(cfg, validation),
    )


def hydra_task(cfg: DictConfig) -> float | None:
    """The body of ``train.py``'s Hydra main: user errors become one message and exit code 1 (no traceback)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    try:
        summary = train(cfg, hydra_cfg.runtime.output_dir)
    except SdloraError as exc:
        log.error("%s", exc)
        if hydra_cfg.mode == RunMode.RUN:
            raise SystemExit(1) from None
        raise
    return summary.get("val_loss", summary.get("loss"))
