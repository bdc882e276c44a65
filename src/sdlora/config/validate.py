"""One validation pass over the composed config: every problem is collected and reported together.

The typed schemas already reject unknown keys and wrong types at compose time; this pass checks values and
combinations (paths that must exist, ranges, limits) before anything heavy is imported or loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sdlora.errors import SdloraError

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
    if family is not None and model.pretrained is None and not family.tiny:
        problems.append(
            f"model.pretrained is required for model={family.name}: a hub id, a diffusers folder, or an "
            "A1111-style .safetensors/.ckpt file"
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
    xformers = str(getattr(model.attention, "value", model.attention)) == "xformers"
    if xformers and importlib.util.find_spec("xformers") is None:
        problems.append(
            "model.attention=xformers needs the xformers package (and a CUDA GPU); use model.attention=sdpa"
        )


def _check_data(cfg: DictConfig, problems: list[str]) -> None:
    data = cfg.data
    if OmegaConf.is_missing(data, "train_dir"):
        problems.append("data.train_dir is required: the folder holding the '<repeats>_<name>' image folders")
    elif not Path(data.train_dir).expanduser().is_dir():
        problems.append(f"data.train_dir={data.train_dir!r} does not exist or is not a folder")
    if data.resolution is not None:
        parts = str(data.resolution).replace("x", ",").split(",")
        try:
            sizes = [int(p) for p in parts]
            if len(sizes) not in (1, 2) or any(s < 64 or s % 8 for s in sizes):
                raise ValueError
        except ValueError:
            problems.append(
                f"data.resolution={data.resolution!r} must be 'N' or 'W,H' with sides ≥ 64 and multiples of 8"
            )
    if data.batch_size < 1:
        problems.append(f"data.batch_size must be ≥ 1, got {data.batch_size}")
    if data.num_workers < 0:
        problems.append(f"data.num_workers must be ≥ 0, got {data.num_workers}")
    if not data.caption_extension.strip():
        problems.append("data.caption_extension must not be empty (e.g. .txt or .caption)")


def _check_network(cfg: DictConfig, problems: list[str]) -> None:
    network = cfg.network
    if network.rank < 1:
        problems.append(f"network.rank must be ≥ 1, got {network.rank}")
    if network.alpha < 0:
        problems.append(f"network.alpha must be ≥ 0 (0 means alpha = rank), got {network.alpha}")
    if not (network.train_unet or network.train_text_encoder):
        problems.append("network.train_unet and network.train_text_encoder are both false: nothing to train")
    for option in ("unet_lr", "text_encoder_lr"):
        if network[option] is not None and network[option] < 0:
            problems.append(f"network.{option} must be ≥ 0, got {network[option]}")


def _check_loss(cfg: DictConfig, problems: list[str]) -> None:
    loss = cfg.loss
    lo, hi = loss.min_timestep, loss.max_timestep
    if not (0 <= lo <= hi <= 1000 and lo < 1000):
        problems.append(
            f"loss.min_timestep={lo} / loss.max_timestep={hi}: need 0 ≤ min ≤ max ≤ 1000 (timesteps are drawn "
            "from [min, max); min = max gives that constant timestep)"
        )


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
    if trainer.log_every_n_steps < 1:
        problems.append(f"trainer.log_every_n_steps must be ≥ 1, got {trainer.log_every_n_steps}")
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_val < 0:
        problems.append(f"trainer.gradient_clip_val must be ≥ 0 or null, got {trainer.gradient_clip_val}")
    name = save.output_name
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        problems.append(f"save.output_name={name!r} must be a plain file name (files go into the run folder)")


def _check_optimization_and_precision(cfg: DictConfig, problems: list[str]) -> None:
    """Optimizer, scheduler and precision nodes (keys, values, combinations) and the model's compile option."""
    from sdlora.optim.checks import check_optimization
    from sdlora.optim.rules import adaptive_lr_problems
    from sdlora.precision.policy import check_precision

    found = check_optimization(cfg)
    problems += found or adaptive_lr_problems(cfg)
    problems += check_precision(cfg.precision)
    if cfg.model.compile and not str(cfg.model.compile_backend).strip():
        problems.append("model.compile_backend must name a torch.compile backend (e.g. inductor)")


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`SdloraError` listing every problem of ``cfg``; return quietly when there are none."""
    problems: list[str] = []
    _check_model(cfg, problems)
    _check_data(cfg, problems)
    _check_network(cfg, problems)
    _check_loss(cfg, problems)
    _check_trainer_and_save(cfg, problems)
    _check_optimization_and_precision(cfg, problems)
    if problems:
        raise SdloraError(f"the configuration has {len(problems)} problem(s):", problems)
