"""Wire the objects of a training run together and fit (docs/design.md §1). Clever code lives in the named modules.

composed config → resolve once (typed, read-only: :mod:`sdlora.config.resolve`) → the typed run (family, data plan,
validation images, resume point, run facts: :mod:`sdlora.assemble`) → data plan printed, ``data_plan.json`` and
``resolved_config.yaml`` written → (``dry_run`` stops here) → load the model → inject the LoRA → LightningModule,
callbacks, Trainer (:mod:`sdlora.builders`) → ``Trainer.fit`` (caches in the datamodule's hooks) → final validation.
Everything up to the dry-run stop imports neither Lightning nor diffusers nor transformers (docs/design.md §7).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sdlora.utils.atomic import atomic_write_json, atomic_write_text, clean_leftovers
from sdlora.utils.quiet import quiet_third_party, tidy_lightning_logging

if TYPE_CHECKING:
    from sdlora.signals import StopSignals

log = logging.getLogger("sdlora")


def train(
    cfg: DictConfig, run_dir: str | Path, callbacks: list | None = None, signals: StopSignals | None = None
) -> dict[str, Any]:
    """Train a LoRA as ``cfg`` (a composed config) says, writing everything into ``run_dir``; returns a summary of the
    run. ``callbacks``: extra Lightning callbacks (programmatic use, tests). ``signals``: the run's signal handlers
    (:mod:`sdlora.signals`; made here when not given, and active while training)."""
    quiet_third_party()
    from sdlora.config.resolve import RESOLVED_NAME, resolve, resolved_yaml

    config = resolve(cfg)  # a config error ends here, before the data modules (and numpy) are imported
    from sdlora.assemble import assemble, validation_summary
    from sdlora.distributed.world import is_rank_zero
    from sdlora.errors import SdloraError
    from sdlora.memory_run import estimate_run

    run = assemble(config, run_dir)
    plan = run.data.plan
    memory = estimate_run(config, plan, run.family)
    record = {**plan.to_json(), "validation": validation_summary(run)}
    if memory is not None:
        record["memory"] = memory.estimate.to_json()
    if is_rank_zero(config.trainer):  # the other processes of a distributed run plan the same, silently
        clean_leftovers(run.run_dir)
        estimate = memory.estimate.format() if memory is not None else "Memory estimate: not available for this model"
        log.info("Run folder: %s\n%s\n  validation: %s\n%s", run.run_dir, plan.format(), record["validation"]["text"],
                 estimate)  # fmt: skip
        atomic_write_json(run.run_dir / "data_plan.json", record)
        atomic_write_text(run.run_dir / RESOLVED_NAME, resolved_yaml(config))
    problem = memory.budget_problem(config.trainer.memory_budget_gb) if memory is not None else None
    if problem is not None:
        raise SdloraError(problem)
    summary: dict[str, Any] = {"run_dir": str(run.run_dir), "total_steps": run.total_steps}
    if config.dry_run:
        log.info("dry_run=true: stopping before the model is loaded")
        return summary
    if run.resume is not None and run.resume.finished:
        from sdlora.state.complete import complete_finished_run

        return {**summary, **complete_finished_run(run)}
    if signals is None:
        from sdlora.signals import StopSignals, signal_number

        signals = StopSignals(signal_number(config.trainer.preemption_signal))
    return {**summary, **fit(run, list(callbacks or []), signals)}


def fit(run, callbacks: list, signals: StopSignals) -> dict[str, Any]:
    """Load the model, build the network and the Trainer, train; the run's results as a summary."""
    import lightning as L

    from sdlora import builders
    from sdlora.data.datamodule import LoRADataModule
    from sdlora.data.run_caches import DataCaches
    from sdlora.distributed.world import check_world_size, uses_fsdp
    from sdlora.models.loading import configure_memory
    from sdlora.optim.rules import check_optimizer_runs
    from sdlora.precision.policy import torch_dtype, trainer_kwargs, vae_dtype
    from sdlora.results import RunResults
    from sdlora.sweep.hparams import log_run_hparams

    config, precision = run.config, run.config.precision
    tidy_lightning_logging(config.verbose)
    L.seed_everything(config.seed, workers=True, verbose=False)
    _check_deferred_optimizer(config)
    check_optimizer_runs(config.optimizer, config.trainer.accelerator)
    results = RunResults()
    kwargs = {**trainer_kwargs(precision, config.trainer.accelerator, uses_fsdp(config.trainer)),
              **builders.validation_schedule(run)}  # fmt: skip
    trainer = builders.make_trainer(run, [*builders.make_callbacks(run, results, signals), *callbacks], kwargs)
    check_world_size(trainer, run.data.plan.world_size)
    components = run.family.load(torch_dtype(precision.weight_dtype), torch_dtype(vae_dtype(precision)))
    network = _build_network(run, components)
    configure_memory(run.family, components, trainer.strategy.root_device.type)
    module = builders.make_module(run, components, network)
    caches = DataCaches(config.data, run.data.dataset, run.family, components, run.run_dir)  # filled in hooks
    datamodule = LoRADataModule(
        run.data, config.data.num_workers, run.validation, config.validation.every_n_steps is not None, caches=caches,
        persistent_workers=config.data.persistent_workers,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(run.resume.path) if run.resume else None)
    summary: dict[str, Any] = {
        "steps": trainer.global_step, "loss": module.loss_average.mean, "files": [str(p) for p in results.files],
        "states": [str(p) for p in results.states], "nonfinite_skipped": module.nonfinite_skipped,
    }  # fmt: skip
    if results.stopped_by is not None:
        return {**summary, "stopped_by": results.stopped_by, "interrupted": str(results.interrupted)}
    if run.validation is not None:
        summary.update(builders.final_validation(trainer, module, datamodule))
    if results.best is not None:  # save.best_by
        summary["best"] = results.best.to_json()
    log_run_hparams(trainer, config, summary)
    return summary


def _build_network(run, components):
    from sdlora.network.build import build_network
    from sdlora.precision.policy import torch_dtype

    network = build_network(run.family, components, run.config.network)
    network.cast_(torch_dtype(run.config.precision.lora_dtype))  # float32 unless full_fp16 / full_bf16
    log.info(
        "Model: %s from %s (%s). LoRA: %d modules, %s trainable parameters", run.family.name, components.source,
        components.prediction_type, len(network), f"{network.num_parameters():,}",
    )  # fmt: skip
    return network


def _check_deferred_optimizer(config) -> None:
    """Optimizers that are slow to import (transformers' Adafactor) are built once here, before the model loads."""
    from sdlora.errors import SdloraError
    from sdlora.optim.checks import build_problems

    problems = build_problems(config.optimizer, deferred=True)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)


def hydra_task(cfg: DictConfig) -> float | None:
    """The body of ``train.py``'s Hydra main: user errors become one message and exit code 1 (no traceback); in a
    sweep a failed job is recorded and the others go on (:mod:`sdlora.sweep.job`).

    Returns the final ``val/loss`` when validation is on (what a Hydra sweeper minimises), else ``loss/average``.
    """
    from sdlora.sweep.job import run_hydra_job

    return run_hydra_job(cfg, train)
