"""One validation pass over the composed config: every problem is collected and reported together.

The typed schemas already reject unknown keys and wrong types at compose time; this pass checks values and
combinations (paths that must exist, ranges, limits) before anything heavy is imported or loaded.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sdlora.config.schema import Attention
from sdlora.errors import SdloraError
from sdlora.precision.policy import ACCELERATORS
from sdlora.signals import signal_number

MAX_TOKEN_LENGTHS = (75, 150, 225)


def _family_class(cfg: DictConfig, problems: list[str]):
    from hydra.utils import get_class

    from sdlora.models.family import ModelFamily

    try:
        cls = get_class(cfg.model._target_)
    except Exception as exc:
        problems.append(f"model._target_={cfg.model._target_!r} cannot be imported ({str(exc).splitlines()[0]})")
        return None
    if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
        problems.append(f"model._target_={cfg.model._target_!r} is not a sdlora model family")
        return None
    return cls


def _check_model(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.models.sources import resolve_source

    model = cfg.model
    family = _family_class(cfg, problems)
    if family is not None and model.pretrained is None and not family.tiny and not cfg.get("dry_run", False):
        problems.append(
            f"model.pretrained is required for model={family.name}: a hub id, a diffusers folder, or an "
            "A1111-style .safetensors/.ckpt file (dry_run=true plans without one)"
        )
    for option in ("pretrained", "vae"):
        value = model.get(option)
        if value is not None:
            try:
                resolve_source(value, option=f"model.{option}")
            except SdloraError as exc:
                problems.append(str(exc))
    if model.max_token_length not in MAX_TOKEN_LENGTHS:
        problems.append(f"model.max_token_length must be one of {MAX_TOKEN_LENGTHS}, got {model.max_token_length}")
    if model.clip_skip is not None and model.clip_skip < 1:
        problems.append(f"model.clip_skip must be ≥ 1 (1 = last layer), got {model.clip_skip}")
    if model.attention == Attention.xformers and importlib.util.find_spec("xformers") is None:
        problems.append(
            "model.attention=xformers needs the xformers package (and a CUDA GPU); use model.attention=sdpa"
        )


def _check_data(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.config.data_checks import check_data

    check_data(cfg, problems)


def _check_network(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.config.network_checks import check_network
    from sdlora.config.network_type_checks import check_diffusers_export

    check_network(cfg.network, _family_class(cfg, []), problems)
    check_diffusers_export(cfg, problems)


def _check_loss(cfg: DictConfig, problems: list[str]) -> None:
    loss = cfg.loss
    lo, hi = loss.min_timestep, loss.max_timestep
    if not (0 <= lo <= hi <= 1000 and lo < 1000):
        problems.append(
            f"loss.min_timestep={lo} / loss.max_timestep={hi}: need 0 ≤ min ≤ max ≤ 1000 (timesteps are drawn "
            "from [min, max); min = max gives that constant timestep)"
        )
    positive = ("min_snr_gamma", "v_pred_like_loss", "noise_offset", "ip_noise_gamma", "huber_scale")
    for option in positive:
        if loss[option] is not None and loss[option] <= 0:
            problems.append(f"loss.{option} must be > 0 (or null to turn it off), got {loss[option]}")
    if loss.multires_noise_iterations is not None and loss.multires_noise_iterations < 1:
        problems.append(f"loss.multires_noise_iterations must be ≥ 1 or null, got {loss.multires_noise_iterations}")
    if not 0 < loss.multires_noise_discount <= 1:
        problems.append(f"loss.multires_noise_discount must be in (0, 1], got {loss.multires_noise_discount}")
    if not 0 < loss.huber_c <= 1:
        problems.append(f"loss.huber_c must be in (0, 1], got {loss.huber_c}")
    requires = (
        ("adaptive_noise_scale", "noise_offset"),
        ("noise_offset_random_strength", "noise_offset"),
        ("ip_noise_gamma_random_strength", "ip_noise_gamma"),
    )
    for option, needed in requires:
        if loss[option] and not loss[needed]:
            problems.append(f"loss.{option} needs loss.{needed}")
    if loss.scale_v_pred_loss_like_noise_pred and loss.zero_terminal_snr:
        problems.append(
            "loss.scale_v_pred_loss_like_noise_pred and loss.zero_terminal_snr cannot be combined: the scale is 0 at "
            "the zero-SNR timestep, so those samples would never be learnt (kohya forbids it too)"
        )
    _check_loss_prediction_type(cfg, problems)


def _check_loss_prediction_type(cfg: DictConfig, problems: list[str]) -> None:
    """v-prediction-only and ε-only loss options, when the prediction type is known before loading the model."""
    from sdlora.diffusion.prediction import prediction_type_problems

    prediction = expected_prediction_type(cfg)
    if prediction is not None:
        problems += prediction_type_problems(cfg.loss, prediction)


def expected_prediction_type(cfg: DictConfig) -> str | None:
    """``model.v_parameterization``, else what the checkpoint declares, else the family's default; None if unknown
    (a hub id, or a model option that is reported by the model checks)."""
    from hydra.utils import get_class

    from sdlora.models.sources import expected_prediction_type as expected

    try:
        family = get_class(cfg.model._target_)
        return expected(cfg.model.pretrained, cfg.model.v_parameterization, family.default_v_parameterization)
    except Exception:  # reported by the model checks
        return None


def _check_trainer_and_save(cfg: DictConfig, problems: list[str]) -> None:
    trainer, save = cfg.trainer, cfg.save
    if trainer.max_steps == 0 or trainer.max_steps < -1:
        problems.append(f"trainer.max_steps must be ≥ 1, or -1 for no step limit; got {trainer.max_steps}")
    if trainer.max_epochs is not None and trainer.max_epochs < 1:
        problems.append(f"trainer.max_epochs must be ≥ 1 or null, got {trainer.max_epochs}")
    if trainer.max_steps == -1 and trainer.max_epochs is None:
        problems.append("set trainer.max_steps or trainer.max_epochs: with neither, training would never end")
    if trainer.accumulate_grad_batches < 1:
        problems.append(f"trainer.accumulate_grad_batches must be ≥ 1, got {trainer.accumulate_grad_batches}")
    if trainer.log_every_n_steps is not None and trainer.log_every_n_steps < 1:
        problems.append(f"trainer.log_every_n_steps must be ≥ 1 or null, got {trainer.log_every_n_steps}")
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_val < 0:
        problems.append(f"trainer.gradient_clip_val must be ≥ 0 or null, got {trainer.gradient_clip_val}")
    if str(trainer.accelerator).lower() not in ACCELERATORS:
        problems.append(f"trainer.accelerator={trainer.accelerator!r} is none of {', '.join(ACCELERATORS)} (sdlora "
                        "trains on CUDA GPUs, Apple's MPS or the CPU)")  # fmt: skip
    _check_fault_options(trainer, problems)
    budget = trainer.memory_budget_gb
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        problems.append(f"trainer.memory_budget_gb must be a positive number of GB or null, got {budget}")
    name = save.output_name
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        problems.append(f"save.output_name={name!r} must be a plain file name (files go into the run folder)")


def _check_validation_and_masks(cfg: DictConfig, problems: list[str]) -> None:
    v = cfg.validation
    if not 0 <= v.split < 1:
        problems.append(f"validation.split must be in [0, 1) (a fraction of the training images), got {v.split}")
    if v.dir and v.split:
        problems.append("validation.dir and validation.split are both set: choose one source of validation images")
    if v.dir and not Path(v.dir).expanduser().is_dir():
        problems.append(f"validation.dir={v.dir!r} does not exist or is not a folder")
    for option in ("every_n_steps", "batch_size"):
        if v[option] is not None and v[option] < 1:
            problems.append(f"validation.{option} must be ≥ 1 or null, got {v[option]}")
    if v.num_timesteps < 1:
        problems.append(f"validation.num_timesteps must be ≥ 1, got {v.num_timesteps}")
    if v.every_n_steps and not (v.dir or v.split):
        problems.append("validation.every_n_steps needs validation images: set validation.dir or validation.split")
    mask_dir = cfg.data.mask_dir
    if mask_dir and not cfg.loss.masked:
        problems.append("data.mask_dir is set but loss.masked=false: set loss.masked=true to use the masks")
    if mask_dir and not Path(mask_dir).expanduser().is_dir():
        problems.append(f"data.mask_dir={mask_dir!r} does not exist or is not a folder")


def _check_optimization_and_precision(cfg: DictConfig, problems: list[str]) -> None:
    """Optimizer, scheduler and precision nodes (keys, values, combinations) and the model's compile option."""
    from sdlora.optim.checks import check_optimization
    from sdlora.optim.rules import adaptive_lr_problems, combination_problems
    from sdlora.precision.policy import check_precision

    found = _unrepresentable(cfg) or check_optimization(cfg)
    problems += found or (adaptive_lr_problems(cfg) + combination_problems(cfg))
    problems += check_precision(cfg.precision)
    if cfg.model.compile and not str(cfg.model.compile_backend).strip():
        problems.append("model.compile_backend must name a torch.compile backend (e.g. inductor)")


def _check_fault_options(trainer: DictConfig, problems: list[str]) -> None:
    """The options of signals and non-finite values (trainer.preemption_signal, max_skipped_fraction, …)."""
    try:
        signal_number(trainer.preemption_signal)
    except ValueError as exc:
        problems.append(str(exc))
    if not 0 <= trainer.max_skipped_fraction <= 1:
        problems.append(f"trainer.max_skipped_fraction must be in [0, 1], got {trainer.max_skipped_fraction}")
    every = trainer.check_finite_every_n_steps
    if every is not None and every < 1:
        problems.append(f"trainer.check_finite_every_n_steps must be ≥ 1 or null, got {every}")


FLOAT32_MAX = 3.4028234663852886e38


def _unrepresentable(cfg: DictConfig) -> list[str]:
    """Learning rates and optimizer arguments must be finite and fit a float32 (the optimizers compute in it)."""
    optimizer = cfg.optimizer
    keys = [k for k in optimizer if not str(k).startswith("_") and not OmegaConf.is_missing(optimizer, k)]
    values = {f"optimizer.{k}": optimizer[k] for k in keys}  # ``_target_: ???`` (optimizer=custom) is reported later
    values |= {f"network.{k}": cfg.network[k] for k in ("unet_lr", "text_encoder_lr")}
    problems = []
    for key, value in values.items():
        numbers = value if isinstance(value, list | tuple) or OmegaConf.is_list(value) else [value]
        for number in numbers:
            if isinstance(number, float) and not (math.isfinite(number) and abs(number) <= FLOAT32_MAX):
                problems.append(
                    f"{key}={value} cannot be used: the optimizers compute in float32, whose largest number is about "
                    "3.4e38 (and NaN/inf are no values)"
                )
                break
    return problems


def _check_saving_sampling_resume(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.config.ema_checks import check_best, check_ema
    from sdlora.config.save_checks import check_resume_option, check_sample, check_save

    check_save(cfg.save, problems)
    check_ema(cfg, problems)
    check_best(cfg, problems)
    check_sample(cfg.sample, problems)
    check_resume_option(cfg, problems)


def _check_sweep_and_scale(cfg: DictConfig, problems: list[str]) -> None:
    from sdlora.config.sweep_checks import check_sweep_and_scale

    check_sweep_and_scale(cfg, problems)


def check_config(cfg: DictConfig) -> None:
    """Raise one :class:`SdloraError` listing every problem of ``cfg``; return quietly when there are none."""
    problems: list[str] = []
    _check_model(cfg, problems)
    _check_data(cfg, problems)
    _check_network(cfg, problems)
    _check_loss(cfg, problems)
    _check_validation_and_masks(cfg, problems)
    _check_trainer_and_save(cfg, problems)
    _check_optimization_and_precision(cfg, problems)
    _check_saving_sampling_resume(cfg, problems)
    _check_sweep_and_scale(cfg, problems)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)
