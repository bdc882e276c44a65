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


def train(cfg: DictConfig, run_dir: str | Path, callbacks: list | None = None) -> dict[str, Any]:
    """Train a LoRA as ``cfg`` says, writing everything into ``run_dir``; returns a summary of the run.
    ``callbacks``: extra Lightning callbacks (programmatic use, tests)."""
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
        trainer_cfg.max_epochs,
    )  # fmt: skip
    log.info("Run folder: %s\n%s", run_dir, data.plan.format())
    atomic_write_json(run_dir / "data_plan.json", data.plan.to_json())
    summary: dict[str, Any] = {"run_dir": str(run_dir), "total_steps": data.plan.length.total_steps}
    _check_schedule(cfg, data.plan.length.total_steps)
    if cfg.dry_run:
        log.info("dry_run=true: stopping before the model is loaded")
        return summary
    return _fit(cfg, run_dir, family, data, resolution, summary, list(callbacks or []))


def _check_schedule(cfg: DictConfig, total_steps: int) -> None:
    """The optimizer and schedule built once over the run's real horizon (e.g. warm-up + decay must fit in it)."""
    from sdlora.optim.checks import build_problems

    problems = build_problems(cfg.optimizer, cfg.scheduler, total_steps)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)


def _fit(
    cfg: DictConfig, run_dir: Path, family, data, resolution, summary: dict[str, Any], callbacks: list
) -> dict[str, Any]:
    import lightning as L

    from sdlora.data.datamodule import LoRADataModule
    from sdlora.models.loading import configure_memory
    from sdlora.network.build import build_network
    from sdlora.optim.rules import apply_optimizer_rules
    from sdlora.precision.policy import device_type, resolve_precision

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    device = device_type(cfg.trainer.accelerator)
    precision = resolve_precision(cfg.precision, device)
    for note in precision.notes:
        log.warning("%s", note)
    apply_optimizer_rules(cfg, device, precision.lora_dtype)
    saver = _make_saver(cfg, run_dir, family, data, resolution, precision)
    callbacks = [saver, *_precision_callbacks(cfg, precision), *callbacks]
    trainer = _make_trainer(cfg, run_dir, data.plan.length, callbacks, precision.trainer_kwargs(device))
    components = family.load(precision.torch_dtype(precision.weight_dtype), precision.torch_dtype(precision.vae_dtype))
    network = build_network(family, components, cfg.network)
    network.to(precision.torch_dtype(precision.lora_dtype))  # float32 unless full_fp16 / full_bf16
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


def _precision_callbacks(cfg: DictConfig, precision) -> list:
    if not precision.stochastic_rounding:
        return []
    from sdlora.precision.rounding import StochasticRounding

    return [StochasticRounding(seed=cfg.seed)]


def _make_module(cfg: DictConfig, family, components, network, length):
    from sdlora.diffusion.objective import DiffusionObjective
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
        objective=DiffusionObjective(components.prediction_type, cfg.loss.min_timestep, cfg.loss.max_timestep),
        seed=cfg.seed,
    )


def _make_saver(cfg: DictConfig, run_dir: Path, family, data, resolution, precision):
    """The callback writing LoRA files, with kohya's metadata for this run."""
    from sdlora.callbacks.save_lora import SaveLoRA
    from sdlora.network.io import SAVE_DTYPES
    from sdlora.network.metadata import file_sha256, modelspec_metadata, training_metadata

    model_hash = _hash_in_background(family.pretrained, file_sha256)
    run_info = {
        "resolution": resolution,
        "version": __version__,
        "model_path": family.pretrained,
        "vae_path": family.vae,
        "precision": precision,
    }

    def metadata(prediction_type: str) -> dict[str, str]:
        run = {**run_info, "model_sha256": model_hash.result() if model_hash else None}
        return {
            **training_metadata(cfg, family, prediction_type, data.plan, run),
            **modelspec_metadata(family, prediction_type, cfg.save.output_name, resolution, cfg),
        }

    save_precision = cfg.save.precision.value if cfg.save.precision is not None else None
    return SaveLoRA(
        run_dir, cfg.save.output_name, metadata, data.plan.length.steps_per_epoch,
        save_format=cfg.save.format.value, dtype=SAVE_DTYPES[save_precision],
    )  # fmt: skip


def _hash_in_background(location: str | None, hasher) -> Future | None:
    """SHA-256 of a single-file base model, computed while training runs (kohya's ss_new_sd_model_hash)."""
    if not location or not Path(location).expanduser().is_file():
        return None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlora-hash")
    future = executor.submit(hasher, Path(location).expanduser())
    executor.shutdown(wait=False)
    return future


def _make_trainer(cfg: DictConfig, run_dir: Path, length, callbacks: list, precision_kwargs: dict):
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
        **precision_kwargs,
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
