"""kohya's LoRA metadata (docs/kohya.md §9): ``ss_*`` training keys and the ``modelspec.*`` (SAI model spec) keys.

Every value is a string (``str(v)``: booleans "True"/"False", None → "None"; JSON for nested values), so tools that
read kohya files (A1111's additional-networks, ComfyUI, civitai, kohya's own tools) read ours. Values describe what
this run actually did.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdlora.config.schema import CacheMode, TrainConfig
from sdlora.optim.rules import ADAFACTOR_SCHEDULER, uses_relative_step_schedule

if TYPE_CHECKING:
    from sdlora.assemble import Run, RunFacts

SAI_MODEL_SPEC = "1.0.0"


def legacy_model_hash(path: Path) -> str:
    """kohya/A1111 old model hash: first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def model_file_metadata(key: str, location: str | None, full_hash: str | None = None) -> dict[str, str]:
    """``ss_<key>_name`` (basename) and, for files, the legacy and full SHA-256 hashes [ss_sd_model_*, ss_vae_*]."""
    if not location:
        return {}
    path = Path(location)
    out = {f"ss_{key}_name": path.name}
    if path.is_file():
        out[f"ss_{key}_hash"] = legacy_model_hash(path)
        if full_hash:
            out[f"ss_new_{key}_hash"] = full_hash
    return out


TAG_FREQUENCY_LIMIT = 1000  # tags kept per folder in ss_tag_frequency (the most frequent)


def tag_frequency(records, limit: int = TAG_FREQUENCY_LIMIT) -> dict[str, dict[str, int]]:
    """``ss_tag_frequency``: per folder, how many images carry each comma-separated tag (once per image); at most
    ``limit`` tags per folder, the most frequent (a huge caption file must not make every LoRA huge)."""
    table: dict[str, Counter] = {}
    for record in records:
        tags = {t.strip().lower() for t in record.caption.split(",") if t.strip()}
        table.setdefault(record.subset.name, Counter()).update(tags)
    return {folder: dict(counts.most_common(limit)) for folder, counts in table.items()}


class LoRAMetadata:
    """The metadata of one run's LoRA files: the run's keys (computed at the first save, once the network and the
    model's prediction type are known) plus each save's step and epoch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._run_keys: dict[str, str] | None = None

    def for_save(self, network: Any, prediction_type: str, steps: int, epoch: int) -> dict[str, str]:
        if self._run_keys is None:
            run = self.run
            self._run_keys = {
                **training_metadata(run, prediction_type, network),
                **modelspec_metadata(run.family, prediction_type, run.config.save.output_name, run.resolution,
                                     run.config),
            }  # fmt: skip
        return {**self._run_keys, **save_time_metadata(steps, epoch)}


def training_metadata(run: Run, prediction_type: str, network: Any = None) -> dict[str, str]:
    """The ss_* keys written once per run (kohya's ``train_network.py`` list, for the options sdlora has)."""
    config, plan = run.config, run.data.plan
    meta: dict[str, Any] = {
        **_schedule_keys(config, plan, run.facts),
        **_network_keys(config, network),
        **_model_keys(config, run.family, prediction_type),
        **_loss_keys(config),
        **_dataset_keys(config, plan, run.resolution, run.facts.world_size),
    }
    meta.update(model_file_metadata("sd_model", config.model.pretrained, run.facts.model_sha256()))
    meta.update(model_file_metadata("vae", config.model.vae))
    return {k: str(v) for k, v in meta.items()}


def _schedule_keys(cfg: TrainConfig, plan: Any, facts: RunFacts) -> dict[str, Any]:
    """Session, learning rates, optimizer, schedule, precision, steps and epochs."""
    network, trainer, optimizer = cfg.network, cfg.trainer, cfg.optimizer
    lrs = {"ss_learning_rate": None, "ss_text_encoder_lr": network.text_encoder_lr, "ss_unet_lr": network.unet_lr}
    lrs = {k: optimizer["lr"] if v is None else (list(v) if isinstance(v, tuple) else v) for k, v in lrs.items()}
    if uses_relative_step_schedule(optimizer):
        lrs = dict.fromkeys(lrs)  # kohya sets them to None: Adafactor chooses its own step size
    return {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": facts.started_at,
        "ss_output_name": cfg.save.output_name,
        **lrs,
        "ss_num_batches_per_epoch": plan.length.batches_per_epoch,
        "ss_num_epochs": plan.length.epochs,
        "ss_gradient_checkpointing": cfg.model.gradient_checkpointing,
        "ss_gradient_accumulation_steps": trainer.accumulate_grad_batches,
        "ss_max_train_steps": plan.length.total_steps,
        "ss_lr_warmup_steps": cfg.scheduler.get("warmup_steps", 0),
        "ss_lr_scheduler": scheduler_name(cfg.scheduler),
        "ss_optimizer": optimizer_description(optimizer),
        "ss_max_grad_norm": trainer.gradient_clip_val or 0.0,
        "ss_mixed_precision": cfg.precision.mixed_precision,
        "ss_full_fp16": cfg.precision.lora_dtype == "float16",
        "ss_seed": cfg.seed,
        "ss_lowram": False,
        "ss_training_comment": cfg.save.training_comment,  # [training_comment]
        "ss_sd_scripts_commit_hash": f"sdlora {facts.version}",
    }


def optimizer_class(node: Any) -> str:
    from sdlora.optim.factory import target_class_name

    return target_class_name(node)


def _literal(value: Any) -> str:
    """A config value as kohya's ``optimizer_args`` literal (lists become tuples: ``betas=(0.9, 0.999)``)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return str(tuple(value)) if isinstance(value, list | tuple) else str(value)


def optimizer_description(node: Any) -> str:
    """``ss_optimizer``: ``module.Class(k=v,…)`` with the optimizer's arguments besides lr, as kohya writes it."""
    args = ",".join(f"{k}={_literal(v)}" for k, v in node.items() if not str(k).startswith("_") and k != "lr")
    return optimizer_class(node) + (f"({args})" if args else "")


def scheduler_name(node: Any) -> str:
    """``ss_lr_scheduler``: kohya's scheduler name (sdlora's factories carry it), ``adafactor:<initial lr>``."""
    name = str(node["_target_"]).rsplit(".", 1)[-1]
    if str(node["_target_"]) == ADAFACTOR_SCHEDULER:
        return f"adafactor:{node.get('initial_lr')}"
    return name


def _network_keys(cfg: TrainConfig, lora: Any = None) -> dict[str, Any]:
    """Network type, rank/alpha used, dropouts, network_args and max-norm (``lora``: the built network, if any)."""
    from sdlora.network.network_args import network_args, used_dim_alpha
    from sdlora.network.types import type_info

    network = cfg.network
    dim, alpha = used_dim_alpha(network, lora)
    return {
        "ss_network_module": type_info(network.name).module,  # networks.lora, lycoris.kohya, networks.dylora, …
        "ss_network_dim": dim,
        "ss_network_alpha": alpha,
        "ss_network_dropout": network.dropout or None,
        "ss_network_args": json.dumps(network_args(network)),
        "ss_scale_weight_norms": network.scale_weight_norms or None,
    }


def _model_keys(cfg: TrainConfig, family: Any, prediction_type: str) -> dict[str, Any]:
    return {
        "ss_v2": family.is_v2,
        "ss_base_model_version": family.base_model_version_for(prediction_type),
        "ss_clip_skip": cfg.model.clip_skip,
        "ss_max_token_length": cfg.model.max_token_length,
    }


def _loss_keys(cfg: TrainConfig) -> dict[str, Any]:
    """Noise and loss-weighting options (kohya writes None for options that are off)."""
    loss = cfg.loss
    return {
        "ss_noise_offset": loss.noise_offset,
        "ss_noise_offset_random_strength": loss.noise_offset_random_strength,
        "ss_adaptive_noise_scale": loss.adaptive_noise_scale,
        "ss_multires_noise_iterations": loss.multires_noise_iterations,
        "ss_multires_noise_discount": loss.multires_noise_discount if loss.multires_noise_iterations else None,
        "ss_ip_noise_gamma": loss.ip_noise_gamma,
        "ss_ip_noise_gamma_random_strength": loss.ip_noise_gamma_random_strength,
        "ss_zero_terminal_snr": loss.zero_terminal_snr,
        "ss_min_snr_gamma": loss.min_snr_gamma,
        "ss_debiased_estimation": loss.debiased_estimation,
        "ss_loss_type": loss.type.value,
        "ss_huber_schedule": loss.huber_schedule.value,
        "ss_huber_c": loss.huber_c,
        "ss_huber_scale": loss.huber_scale,
        "ss_prior_loss_weight": loss.prior_loss_weight,
    }


def _dirs_info(plan: Any, is_reg: bool) -> dict[str, dict[str, int]]:
    """kohya's ss_dataset_dirs / ss_reg_dataset_dirs: {folder name: {"n_repeats", "img_count"}}."""
    info: dict[str, dict[str, int]] = {}
    for row in plan.subset_rows():
        if row["is_reg"] != is_reg or not row["images"]:
            continue
        name, i = Path(row["path"]).name, 2
        while name in info:  # the same folder name twice (data.subsets): kohya appends " (2)"
            name, i = f"{Path(row['path']).name} ({i})", i + 1
        info[name] = {"n_repeats": row["repeats"], "img_count": row["images"]}
    return info


def _any_subset(plan: Any, option: str) -> bool:
    """Whether any folder uses an augmentation (data.* or a data.subsets entry)."""
    return any(getattr(subset.options, option) for subset in plan.scan.subsets)


def _dataset_keys(cfg: TrainConfig, plan: Any, resolution: tuple[int, int], world_size: int) -> dict[str, Any]:
    """Images, repeats, captions, augmentation and buckets (kohya's keys for a run without a dataset config)."""
    data, trainer = cfg.data, cfg.trainer
    width, height = resolution
    spec = plan.spec
    enabled = bool(spec and spec.enabled)
    return {
        "ss_num_train_images": plan.num_train_images_with_repeats,
        "ss_num_reg_images": plan.reg.requested if plan.reg is not None else 0,
        "ss_cache_latents": data.cache_latents != CacheMode.none,
        "ss_caption_dropout_rate": data.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": data.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": data.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_batch_size_per_device": data.batch_size,
        "ss_total_batch_size": data.batch_size * trainer.accumulate_grad_batches * world_size,
        "ss_resolution": f"({width}, {height})",
        "ss_color_aug": _any_subset(plan, "color_aug"),
        "ss_flip_aug": _any_subset(plan, "flip_aug"),
        "ss_random_crop": _any_subset(plan, "random_crop"),
        "ss_shuffle_caption": _any_subset(plan, "shuffle_caption"),
        "ss_enable_bucket": enabled,
        "ss_bucket_no_upscale": enabled and spec.no_upscale,
        "ss_min_bucket_reso": spec.min_reso if enabled else None,
        "ss_max_bucket_reso": spec.max_reso if enabled else None,
        "ss_keep_tokens": data.keep_tokens,
        "ss_dataset_dirs": json.dumps(_dirs_info(plan, False)),
        "ss_reg_dataset_dirs": json.dumps(_dirs_info(plan, True)),
        "ss_tag_frequency": json.dumps(tag_frequency(plan.records)),
        "ss_bucket_info": json.dumps(plan.bucket_info() if enabled else None),
    }


def modelspec_metadata(
    family: Any, prediction_type: str, title: str, resolution: tuple[int, int], cfg: TrainConfig
) -> dict[str, str]:
    """``modelspec.*`` keys (SAI model spec 1.0.0) as kohya writes them for a LoRA."""
    spec = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": f"{family.modelspec_architecture(prediction_type)}/lora",
        "modelspec.implementation": family.modelspec_implementation,
        "modelspec.title": cfg.save.metadata.title or title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
    }
    card = cfg.save.metadata  # [metadata_author, metadata_description, metadata_license, metadata_tags]
    for key in ("author", "description", "license", "tags"):
        if getattr(card, key):
            spec[f"modelspec.{key}"] = str(getattr(card, key))
    if cfg.model.clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(cfg.model.clip_skip)
    if (cfg.loss.min_timestep, cfg.loss.max_timestep) != (0, 1000):
        spec["modelspec.timestep_range"] = f"{cfg.loss.min_timestep},{cfg.loss.max_timestep}"
    return spec


def save_time_metadata(steps: int, epoch: int) -> dict[str, str]:
    """Keys kohya adds at every save."""
    return {"ss_training_finished_at": str(time.time()), "ss_steps": str(steps), "ss_epoch": str(epoch)}
