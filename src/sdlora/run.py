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

    run_dir = Path(run_dir)
    validate(cfg)
    family = instantiate(cfg.model)
    resolution = family.resolution(cfg.data.resolution)
    trainer_cfg = cfg.trainer
    data = build_training_data(
        cfg.data, resolution, cfg.seed, trainer_cfg.accumulate_grad_batches, trainer_cfg.max_steps,
        trainer_cfg.max_epochs, bucket_defaults=family.default_bucket_reso,
        prior_loss_weight=cfg.loss.prior_loss_weight,
    )  # fmt: skip
    log.info("Run folder: %s\n%s", run_dir, data.plan.format())
    atomic_write_json(run_dir / "data_plan.json", data.plan.to_json())
    summary: dict[str, Any] = {"run_dir": str(run_dir), "total_steps": data.plan.length.total_steps}
    if cfg.dry_run:
        log.info("dry_run=true: stopping before the model is loaded")
        return summary
    return _fit(cfg, run_dir, family, data, resolution, summary)


def _fit(cfg: DictConfig, run_dir: Path, family, data, resolution, summary: dict[str, Any]) -> dict[str, Any]:
    import lightning as L

    from sdlora.data.datamodule import LoRADataModule
    from sdlora.models.loading import configure_memory
    from sdlora.network.build import build_network

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_info: dict[str, Any] = {}  # run facts for the metadata, completed once the network exists
    saver = _make_saver(cfg, run_dir, family, data, resolution, run_info)
    trainer = _make_trainer(cfg, run_dir, data.plan.length, [*_network_callbacks(cfg), saver])
    components = family.load(_weight_dtype(cfg, trainer))
    _prepare_data(cfg, run_dir, family, components, data, trainer)
    network = build_network(family, components, cfg.network)
    run_info["network"] = network
    log.info(
        "Model: %s from %s (%s). LoRA: %d modules, %s trainable parameters",
        family.name, components.source, components.prediction_type, len(network), f"{network.num_parameters():,}",
    )  # fmt: skip
    configure_memory(family, components, trainer.strategy.root_device.type)
    module = _make_module(cfg, family, components, network, data.plan.length)
    trainer.fit(module, datamodule=LoRADataModule(data, cfg.data.num_workers))
    summary.update(steps=trainer.global_step, loss=module.loss_average.mean, files=[str(p) for p in saver.saved])
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


def _make_module(cfg: DictConfig, family, components, network, length):
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.optim.factory import instantiate_partial

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


def _make_trainer(cfg: DictConfig, run_dir: Path, length, callbacks: list):
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
    return summary.get("loss")
