"""Value and combination checks of the ``data`` group (and ``loss.prior_loss_weight``), part of the validation pass.

Each check appends one readable message naming the option(s) to ``problems``; nothing is raised here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdlora.config.schema import CacheMode

_RATES = ("caption_dropout_rate", "caption_tag_dropout_rate")
_EXAMPLES = {"caption_separator": "','", "caption_extension": ".txt or .caption"}


def _family_defaults(cfg: DictConfig) -> tuple[tuple[int, int], int, int | None]:
    """(default min/max bucket reso, bucket step multiple, default resolution) of the chosen family, quietly."""
    from hydra.utils import get_class

    try:
        cls = get_class(cfg.model._target_)
        return tuple(cls.default_bucket_reso), int(cls.bucket_reso_multiple), int(cls.default_resolution)
    except Exception:  # reported by the model checks
        return (256, 1024), 64, None


def _preset_name(cfg: DictConfig) -> str:
    """The ``model=`` preset of the chosen family (sd15, sdxl, …), as the user wrote it."""
    from hydra.utils import get_class

    try:
        return str(get_class(cfg.model._target_).name)
    except Exception:  # reported by the model checks
        return str(cfg.model._target_)


def _resolution(data: DictConfig, problems: list[str]) -> tuple[int, int] | None:
    from sdlora.data.resolution import parse_resolution

    if data.resolution is None:
        return None
    try:
        return parse_resolution(data.resolution)
    except ValueError as exc:
        problems.append(str(exc))
        return None


def _folders(data: DictConfig, problems: list[str]) -> list[Path]:
    """Dataset folders must exist; returns them (to keep caches out of them)."""
    folders = []
    has_subsets = bool(data.subsets)
    if OmegaConf.is_missing(data, "train_dir") or (data.train_dir is None and not has_subsets):
        problems.append(
            "data.train_dir is required: the folder holding the '<repeats>_<name>' image folders "
            "(or list the folders in data.subsets)"
        )
    elif data.train_dir is not None:
        if not Path(data.train_dir).expanduser().is_dir():
            problems.append(f"data.train_dir={data.train_dir!r} does not exist or is not a folder")
        folders.append(Path(data.train_dir).expanduser())
    if data.reg_dir is not None:
        if not Path(data.reg_dir).expanduser().is_dir():
            problems.append(f"data.reg_dir={data.reg_dir!r} does not exist or is not a folder")
        folders.append(Path(data.reg_dir).expanduser())
    for i, subset in enumerate(data.subsets):
        name = f"data.subsets[{i}]"
        if OmegaConf.is_missing(subset, "dir"):
            problems.append(f"{name}.dir is required (the folder with the images)")
            continue
        if not Path(subset.dir).expanduser().is_dir():
            problems.append(f"{name}.dir={subset.dir!r} does not exist or is not a folder")
        folders.append(Path(subset.dir).expanduser())
        if subset.repeats < 1:
            problems.append(f"{name}.repeats must be ≥ 1, got {subset.repeats}")
        _caption_values(subset, name, problems, allow_null=True)
    return folders


def _caption_values(node: Any, prefix: str, problems: list[str], allow_null: bool = False) -> None:
    for rate in _RATES:
        value = node[rate]
        if value is None and allow_null:
            continue
        if not 0.0 <= value <= 1.0:
            problems.append(f"{prefix}.{rate} must be in [0, 1], got {value}")
    for option in ("keep_tokens", "caption_dropout_every_n_epochs"):
        value = node[option]
        if value is not None and value < 0:
            problems.append(f"{prefix}.{option} must be ≥ 0, got {value}")
    for option in ("caption_separator", "caption_extension"):
        value = node[option]
        if value is not None and not str(value).strip():
            problems.append(f"{prefix}.{option} must not be empty (e.g. {_EXAMPLES[option]})")


def bucket_step_ok(steps: int, multiple: int) -> bool:
    """Whether ``data.bucket_reso_steps`` fits a family whose bucket sides must divide by ``multiple``."""
    return steps >= 8 and steps % 8 == 0 and steps % multiple == 0


def _buckets(cfg: DictConfig, resolution: tuple[int, int] | None, problems: list[str]) -> None:
    data = cfg.data
    (default_min, default_max), multiple, default_res = _family_defaults(cfg)
    steps = data.bucket_reso_steps
    if not bucket_step_ok(steps, multiple):
        problems.append(
            f"data.bucket_reso_steps={steps} must be a positive multiple of {max(multiple, 8)} for "
            f"model={_preset_name(cfg)} (latents are 1/8 of the image and the U-Net must be able to halve them)"
        )
        return
    if not data.enable_bucket or data.bucket_no_upscale:  # no_upscale ignores min/max_bucket_reso (kohya)
        return
    lo = data.min_bucket_reso if data.min_bucket_reso is not None else default_min
    hi = data.max_bucket_reso if data.max_bucket_reso is not None else default_max
    for option, value in (("min_bucket_reso", lo), ("max_bucket_reso", hi)):
        if value < 64 or value % steps:
            problems.append(f"data.{option}={value} must be ≥ 64 and a multiple of data.bucket_reso_steps={steps}")
    if lo > hi:
        problems.append(f"data.min_bucket_reso={lo} is larger than data.max_bucket_reso={hi}")
    resolution = resolution or ((default_res, default_res) if default_res else None)
    if resolution is not None:
        if min(resolution) < lo:
            problems.append(
                f"data.resolution {resolution[0]}x{resolution[1]} is smaller than data.min_bucket_reso={lo}: lower "
                "data.min_bucket_reso or raise the resolution"
            )
        if max(resolution) > hi:
            problems.append(
                f"data.resolution {resolution[0]}x{resolution[1]} is larger than data.max_bucket_reso={hi}: raise "
                "data.max_bucket_reso or lower the resolution"
            )


def _augmenting_subsets(data: DictConfig, option: str) -> bool:
    return bool(data[option]) or any(s[option] for s in data.subsets if s[option] is not None)


def _caches(cfg: DictConfig, folders: list[Path], problems: list[str]) -> None:
    data = cfg.data
    mode = data.cache_latents.value
    if data.cache_latents != CacheMode.none:
        for option in ("color_aug", "random_crop"):
            if _augmenting_subsets(data, option):
                problems.append(
                    f"data.cache_latents={mode} cannot be combined with data.{option}=true: a cached latent is made "
                    f"once from one fixed crop and colour, so {option} would have no effect; set one of them off"
                )
    if data.vae_batch_size < 1:
        problems.append(f"data.vae_batch_size must be ≥ 1, got {data.vae_batch_size}")
    if data.caption_variants < 1:
        problems.append(f"data.caption_variants must be ≥ 1, got {data.caption_variants}")
    text_cache = data.cache_text_encoder_outputs or data.cache_text_encoder_outputs_to_disk
    if text_cache and cfg.network.get("train_text_encoder", False):
        problems.append(
            "data.cache_text_encoder_outputs=true cannot be combined with network.train_text_encoder=true: the "
            "cached outputs would not follow the text encoder's LoRA; set network.train_text_encoder=false"
        )
    augments = (
        _augmenting_subsets(data, "shuffle_caption")
        or any((s.caption_tag_dropout_rate or 0) > 0 for s in data.subsets)
        or data.caption_tag_dropout_rate > 0
    )
    if text_cache and augments and data.caption_variants < 2:
        problems.append(
            "data.cache_text_encoder_outputs=true with data.shuffle_caption / data.caption_tag_dropout_rate needs "
            "data.caption_variants ≥ 2 (each caption is encoded that many times, shuffled differently); with 1 "
            "the captions would be static"
        )
    if data.cache_dir is not None:
        cache = Path(data.cache_dir).expanduser().resolve()
        for folder in folders:
            folder = folder.resolve()
            if cache == folder or folder in cache.parents:
                problems.append(
                    f"data.cache_dir={data.cache_dir!r} is inside the dataset folder {folder}: sdlora never writes "
                    "into a dataset; choose a folder outside it"
                )


def check_data(cfg: DictConfig, problems: list[str]) -> None:
    """Every check of the ``data`` group and ``loss.prior_loss_weight``."""
    data = cfg.data
    folders = _folders(data, problems)
    resolution = _resolution(data, problems)
    if data.batch_size < 1:
        problems.append(f"data.batch_size must be ≥ 1, got {data.batch_size}")
    if data.num_workers < 0:
        problems.append(f"data.num_workers must be ≥ 0, got {data.num_workers}")
    if data.max_caption_bytes < 1:
        problems.append(f"data.max_caption_bytes must be ≥ 1, got {data.max_caption_bytes}")
    _caption_values(data, "data", problems)
    if data.resolution is None or resolution is not None:
        _buckets(cfg, resolution, problems)
    _caches(cfg, folders, problems)
    prior = cfg.loss.get("prior_loss_weight", 1.0)
    if prior < 0:
        problems.append(f"loss.prior_loss_weight must be ≥ 0, got {prior}")
