"""Wire the objects of a training run together and fit (DESIGN §1). Clever code lives in the named modules;
the factories used here are in :mod:`sdlora.builders`.

validate config → family adapter → data plan (printed, data_plan.json) → precision and optimizer rules → load model
→ inject LoRA → LightningModule + callbacks + logger → Trainer.fit (caches in the datamodule's hooks) → final
validation → LoRA file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sdlora.utils.atomic import atomic_write_json
from sdlora.utils.quiet import quiet_third_party, tidy_lightning_logging

log = logging.getLogger("sdlora")


def train(cfg: DictConfig, run_dir: str | Path, callbacks: list | None = None) -> dict[str, Any]:
    """Train a LoRA as ``cfg`` says, writing everything into ``run_dir``; returns a summary of the run.
    ``callbacks``: extra Lightning callbacks (programmatic use, tests)."""
    quiet_third_party()
    from hydra.utils import instantiate

    from sdlora.builders import check_resume, check_schedule, use_masks, validation_summary
    from sdlora.config.derived import apply_derived_options
    from sdlora.config.validate import validate
    from sdlora.data.build import build_training_data
    from sdlora.data.validation import validation_from_config
    from sdlora.distributed.world import is_rank_zero, planned_world_size

    run_dir = Path(run_dir)
    validate(cfg)
    apply_derived_options(cfg)
    family = instantiate(cfg.model)
    resolution = family.resolution(cfg.data.resolution)
    trainer_cfg = cfg.trainer
    data = build_training_data(
        cfg.data, resolution, cfg.seed, trainer_cfg.accumulate_grad_batches, trainer_cfg.max_steps,
        trainer_cfg.max_epochs, bucket_defaults=family.default_bucket_reso,
        prior_loss_weight=cfg.loss.prior_loss_weight, validation_split=cfg.validation.split,
        validation_seed=cfg.validation.seed, world_size=planned_world_size(trainer_cfg),
    )  # fmt: skip
    validation = validation_from_config(cfg, data.held_out, resolution, family.default_bucket_reso)
    use_masks(cfg, data)
    plan = data.plan.to_json()
    plan["validation"] = validation_summary(cfg, validation)
    if is_rank_zero(trainer_cfg):  # the other processes of a distributed run plan the same, silently
        log.info("Run folder: %s\n%s\n  validation: %s", run_dir, data.plan.format(), plan["validation"]["text"])
        atomic_write_json(run_dir / "data_plan.json", plan)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "total_steps": data.plan.length.total_steps}
    check_schedule(cfg, data.plan.length.total_steps)
    resume = check_resume(cfg, data)
    if cfg.dry_run:
        log.info("dry_run=true: stopping before the model is loaded")
        return summary
    return _fit(cfg, run_dir, family, data, validation, resolution, summary, list(callbacks or []), resume)


def _fit(cfg: DictConfig, run_dir: Path, family, data, validation, resolution, summary: dict, callbacks: list, resume):
    import lightning as L

    from sdlora import builders
    from sdlora.data.caching import DataCaches
    from sdlora.data.datamodule import LoRADataModule
    from sdlora.distributed.world import check_world_size, uses_fsdp
    from sdlora.models.loading import configure_memory
    from sdlora.network.build import build_network
    from sdlora.optim.rules import apply_optimizer_rules
    from sdlora.precision.policy import device_type, resolve_precision
    from sdlora.sweep.hparams import log_run_hparams

    tidy_lightning_logging()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    device = device_type(cfg.trainer.accelerator)
    precision = resolve_precision(cfg.precision, device)
    for note in precision.notes:
        log.warning("%s", note)
    apply_optimizer_rules(cfg, device, precision.lora_dtype)
    run_info: dict[str, Any] = {"precision": precision}  # run facts for the metadata; the network is added below
    state, sampler_epoch = builders.state_callbacks(cfg, data)
    saver = builders.make_saver(cfg, run_dir, family, data, resolution, run_info, state)
    callbacks = [*builders.network_callbacks(cfg), *builders.sample_callbacks(cfg, family, run_dir), saver, state,
                 sampler_epoch, *builders.precision_callbacks(cfg, precision), *callbacks]  # fmt: skip
    callbacks.append(builders.data_plan_callback(data.plan))
    fsdp = uses_fsdp(cfg.trainer)
    trainer_kwargs = {**precision.trainer_kwargs(device, fsdp), **builders.validation_schedule(cfg, validation)}
    trainer = builders.make_trainer(cfg, run_dir, data.plan.length, callbacks, trainer_kwargs)
    check_world_size(trainer, data.plan.world_size)
    components = family.load(precision.torch_dtype(precision.weight_dtype), precision.torch_dtype(precision.vae_dtype))
    network = build_network(family, components, cfg.network)
    network.to(precision.torch_dtype(precision.lora_dtype))  # float32 unless full_fp16 / full_bf16
    run_info["network"] = network
    log.info(
        "Model: %s from %s (%s). LoRA: %d modules, %s trainable parameters",
        family.name, components.source, components.prediction_type, len(network), f"{network.num_parameters():,}",
    )  # fmt: skip
    configure_memory(family, components, trainer.strategy.root_device.type)
    module = builders.make_module(cfg, family, components, network, data.plan.length, validation is not None)
    caches = DataCaches(cfg.data, data.dataset, family, components, run_dir)  # filled in the datamodule's hooks
    datamodule = LoRADataModule(
        data, cfg.data.num_workers, validation, cfg.validation.every_n_steps is not None, caches=caches
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume.path) if resume else None)
    summary.update(steps=trainer.global_step, loss=module.loss_average.mean, files=[str(p) for p in saver.saved],
                   states=[str(p) for p in saver.states], nonfinite_skipped=module.nonfinite_skipped)  # fmt: skip
    if saver.interrupted is not None:
        summary["interrupted"] = str(saver.interrupted)
        return summary
    if validation is not None:
        summary.update(builders.final_validation(trainer, module, datamodule))
    log_run_hparams(trainer, cfg, summary)
    for path in saver.saved:
        log.info("Saved %s", path)
    return summary


def hydra_task(cfg: DictConfig) -> float | None:
    """The body of ``train.py``'s Hydra main: user errors become one message and exit code 1 (no traceback); in a
    sweep a failed job is recorded and the others go on (:mod:`sdlora.sweep.job`).

    Returns the final ``val/loss`` when validation is on (what a Hydra sweeper minimises), else ``loss/average``.
    """
    from sdlora.sweep.job import run_hydra_job

    return run_hydra_job(cfg, train)
