"""Factories for the objects of a training run, each from the typed run (:class:`sdlora.assemble.Run`):
the LightningModule and its objective, the callbacks, the validation schedule and the Trainer.
:mod:`sdlora.run` wires them."""

from __future__ import annotations

import logging
from typing import Any

from sdlora.assemble import Run
from sdlora.errors import SdloraError
from sdlora.results import RunResults
from sdlora.signals import StopSignals

log = logging.getLogger("sdlora")


# ------------------------------------------------------------------------------------------------------- module
def make_objective(run: Run, prediction_type: str):
    """The loss of the ``loss`` group for the loaded model; options that contradict its prediction type stop here."""
    from sdlora.diffusion.objective import DiffusionObjective, prediction_type_problems

    loss = run.config.loss
    problems = prediction_type_problems(loss, prediction_type)
    if problems:
        raise SdloraError(f"the loss options do not fit this {prediction_type} model:", problems)
    if loss.zero_terminal_snr and prediction_type != "v_prediction":
        log.warning("loss.zero_terminal_snr is meant for v-prediction models (set model.v_parameterization=true)")
    return DiffusionObjective(prediction_type, loss)


def make_module(run: Run, components, network):
    from sdlora.distributed.world import uses_fsdp
    from sdlora.lit.module import LoRATrainingModule
    from sdlora.models.host_parts import host_parts
    from sdlora.optim.factory import fused_allowed, instantiate_partial, with_fast_kernels

    config = run.config
    batches = run.total_steps * config.trainer.accumulate_grad_batches
    precision, clips = config.precision, bool(config.trainer.gradient_clip_val)
    fused = fused_allowed(precision.trainer_precision, precision.lora_dtype, clips, uses_fsdp(config.trainer))
    optimizer = with_fast_kernels(instantiate_partial(config.optimizer), config.optimizer, fused)
    validation = validation_loss(run)
    return LoRATrainingModule(
        run.family,
        components,
        network,
        optimizer=optimizer,
        scheduler=instantiate_partial(config.scheduler),
        learning_rates={
            "default": config.optimizer["lr"],
            "unet": config.network.unet_lr,
            "text_encoder": config.network.text_encoder_lr,
        },
        total_steps=run.total_steps,
        batches_per_epoch=run.data.plan.length.batches_per_epoch,
        objective=make_objective(run, components.prediction_type),
        seed=config.seed,
        validation=validation,
        skip_nonfinite=config.trainer.skip_nonfinite,
        max_skipped=int(config.trainer.max_skipped_fraction * batches),
        host=host_parts(config.data),
    )


def final_validation(trainer, module, datamodule) -> dict[str, float]:
    """val/loss after the last step (evaluated now unless the last step was just evaluated), and the best one; the
    same for val/loss_ema with an EMA."""
    history = module.validation.history
    if not history or history[-1][0] != trainer.global_step:
        trainer.validate(module, dataloaders=datamodule.validation_loader(), verbose=False)
    out = {"val_loss": history[-1][1], "best_val_loss": min(value for _, value in history)}
    for callback in trainer.callbacks:
        ema_history = getattr(getattr(callback, "validation", None), "history", None)
        if getattr(callback, "evaluation_swap", None) is not None and ema_history:
            out |= {"val_loss_ema": ema_history[-1][1], "best_val_loss_ema": min(v for _, v in ema_history)}
    return out


# ---------------------------------------------------------------------------------------------------- callbacks
def make_callbacks(run: Run, results: RunResults, signals: StopSignals) -> list:
    """The run's callbacks, in the order they act at the end of a step: max-norm, the finite-weights check, sample
    images, the stop request, LoRA files, training states, the sampler's epoch, stochastic rounding, the data plan in
    TensorBoard."""
    from sdlora.callbacks.data_plan import LogDataPlan
    from sdlora.callbacks.finite_weights import FiniteWeights
    from sdlora.callbacks.graceful_stop import GracefulStop
    from sdlora.callbacks.save_lora import SaveLoRAFiles
    from sdlora.callbacks.save_state import TrainingStates
    from sdlora.data.datamodule import SamplerEpoch
    from sdlora.network.io import SAVE_DTYPES
    from sdlora.network.metadata import LoRAMetadata
    from sdlora.state.save_schedule import SaveSchedule

    config, plan = run.config, run.data.plan
    save = config.save
    schedule = SaveSchedule.from_config(save, plan.length.epochs)
    stop = GracefulStop(signals, results)
    files = SaveLoRAFiles(
        run.run_dir, LoRAMetadata(run), schedule, results, plan.length.steps_per_epoch, stop=stop,
        save_format=save.format.value, dtype=SAVE_DTYPES[save.precision.value if save.precision else None],
        also_diffusers=save.also_diffusers,
    )  # fmt: skip
    states = TrainingStates(run.run_dir, schedule, run.fingerprint, run.facts.session(), results, stop=stop)
    t = config.trainer
    finite = FiniteWeights(t.check_finite_every_n_steps, t.skip_nonfinite, t.accumulate_grad_batches)
    ema = _ema_callbacks(run, files)
    return [*_optimizer_callbacks(run), *_network_callbacks(run), finite, *ema, *_sample_callbacks(run), stop, files,
            states, *_best_callbacks(run, files, results, ema), SamplerEpoch(run.data.sampler),
            *_precision_callbacks(run), LogDataPlan(plan)]  # fmt: skip


def validation_loss(run: Run):
    """A :class:`~sdlora.lit.val_loss.ValidationLoss` of the run's settings (None without validation images)."""
    from sdlora.lit.val_loss import ValidationLoss

    if run.validation is None:
        return None
    v, loss = run.config.validation, run.config.loss
    return ValidationLoss(loss.min_timestep, loss.max_timestep, v.num_timesteps, v.seed, v.timestep_bands)


def _ema_callbacks(run: Run, files) -> list:
    """The EMA of the LoRA (``ema=default``): its files beside every LoRA file, val/loss_ema, post-hoc snapshots."""
    config = run.config.ema
    if not config.enabled:
        return []
    from sdlora.callbacks.ema import LoRAEMA
    from sdlora.callbacks.save_lora import FileVariant

    ema = LoRAEMA(
        config, validation=validation_loss(run) if config.use_for_eval else None, metadata=files.metadata,
        run_dir=run.run_dir, resumed_from=run.resume.path if run.resume is not None else None,
    )  # fmt: skip
    files.add_variant(FileVariant("-ema", ema.file_weights, ema.file_metadata))
    return [ema]


def _best_callbacks(run: Run, files, results: RunResults, ema: list) -> list:
    """``<name>-best.<ext>`` by ``save.best_by``."""
    metric = run.config.save.best_by
    if metric is None or run.validation is None:
        return []
    from sdlora.callbacks.best import BestLoRA

    if metric == "val/loss_ema":
        return [BestLoRA(files, results, metric, lambda module: ema[0].validation.history, ema[0].file_weights)]
    return [BestLoRA(files, results, metric, lambda module: module.validation.history)]


def _optimizer_callbacks(run: Run) -> list:
    """A schedule-free optimizer's training and evaluation modes (first: it acts before sample images at the start)."""
    from sdlora.optim.factory import target_class_name
    from sdlora.optim.schedule_free import is_schedule_free_class

    if not is_schedule_free_class(target_class_name(run.config.optimizer)):
        return []
    from sdlora.callbacks.schedule_free import ScheduleFreeMode

    return [ScheduleFreeMode()]


def _network_callbacks(run: Run) -> list:
    """Max-norm regularisation [scale_weight_norms]."""
    from sdlora.callbacks.max_norm import MaxNormRegularization

    max_norm = run.config.network.scale_weight_norms
    return [MaxNormRegularization(max_norm)] if max_norm > 0 else []


def _precision_callbacks(run: Run) -> list:
    """Stochastic rounding of bf16 updates (``precision.stochastic_rounding``)."""
    if not run.config.precision.stochastic_rounding:
        return []
    from sdlora.precision.rounding import StochasticRounding

    return [StochasticRounding(seed=run.config.seed)]


def _sample_callbacks(run: Run) -> list:
    """Sample images during training (``sample.prompts``)."""
    if not run.config.sample.prompts:
        return []
    from sdlora.callbacks.sampling import SampleImages

    return [SampleImages.from_run(run)]


# ------------------------------------------------------------------------------------------------------ trainer
def validation_schedule(run: Run) -> dict[str, Any]:
    """Trainer arguments that evaluate every ``validation.every_n_steps`` optimizer steps (counted in batches)."""
    every = run.config.validation.every_n_steps
    if run.validation is None or not every:
        return {}
    return {"val_check_interval": every * run.config.trainer.accumulate_grad_batches, "check_val_every_n_epoch": None}


def logger_for(run: Run):
    """The ``logger`` node's logger, writing into the run folder unless the node sets its own ``save_dir``."""
    from hydra.utils import instantiate

    from sdlora.config.frozen import thaw

    node = run.config.logger
    if not node:
        return False
    options = thaw(node)
    options.setdefault("save_dir", str(run.run_dir))
    return instantiate(options)


def log_interval(configured: int | None, total_steps: int) -> int:
    """``trainer.log_every_n_steps``, or where it is null one that adapts to the run: every step for runs of up to
    200 steps, then every total/100 steps, at most every 10 (so a short run logs every step, its first and last)."""
    if configured:
        return int(configured)
    return max(1, min(10, total_steps // 100))


def make_trainer(run: Run, callbacks: list, extra_kwargs: dict):
    """The Lightning Trainer; its limits are the plan's (steps and epochs, whichever the config makes first). One
    progress bar for the run (:mod:`sdlora.callbacks.progress`); Lightning's model summary only with
    ``verbose=true``."""
    import lightning as L

    from sdlora.callbacks.progress import RunProgressBar
    from sdlora.distributed.world import make_strategy
    from sdlora.state.checkpoint_io import StateFolderIO

    t, length = run.config.trainer, run.data.plan.length
    extra_kwargs = {**extra_kwargs, "plugins": [*extra_kwargs.get("plugins", []), StateFolderIO()]}
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=make_strategy(t),
        num_nodes=t.num_nodes,
        max_steps=length.total_steps,
        max_epochs=length.epochs,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val or None,
        log_every_n_steps=log_interval(t.log_every_n_steps, length.total_steps),
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=run.config.verbose,
        fast_dev_run=t.fast_dev_run,
        logger=logger_for(run),
        callbacks=[RunProgressBar(length.total_steps), *callbacks] if t.enable_progress_bar else callbacks,
        enable_checkpointing=False,
        default_root_dir=str(run.run_dir),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        **extra_kwargs,
    )
