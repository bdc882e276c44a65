"""kohya's LoRA metadata (kohya-semantics §9): ``ss_*`` training keys and the ``modelspec.*`` (SAI model spec) keys.

Every value is a string (``str(v)``: booleans "True"/"False", None → "None"; JSON for nested values), so tools that
read kohya files (A1111's additional-networks, ComfyUI, civitai, kohya's own tools) read ours. Values describe what
this run actually did.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

NETWORK_MODULE = "networks.lora"
SAI_MODEL_SPEC = "1.0.0"


def legacy_model_hash(path: Path) -> str:
    """kohya/A1111 old model hash: first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def tag_frequency(records) -> dict[str, dict[str, int]]:
    """``ss_tag_frequency``: per folder, how many images carry each comma-separated tag (once per image)."""
    table: dict[str, Counter] = {}
    for record in records:
        tags = {t.strip().lower() for t in record.caption.split(",") if t.strip()}
        table.setdefault(record.subset.name, Counter()).update(tags)
    return {folder: dict(counts) for folder, counts in table.items()}


def training_metadata(cfg: Any, family: Any, prediction_type: str, plan: Any, run: dict[str, Any]) -> dict[str, str]:
    """The ss_* keys written once per run (kohya's ``train_network.py`` list, for the options sdlora has)."""
    meta: dict[str, Any] = {
        **_schedule_keys(cfg, plan, run),
        **_network_keys(cfg),
        **_model_keys(cfg, family, prediction_type),
        **_loss_keys(cfg),
        **_dataset_keys(cfg, plan, run),
    }
    meta.update(model_file_metadata("sd_model", run.get("model_path"), run.get("model_sha256")))
    meta.update(model_file_metadata("vae", run.get("vae_path")))
    return {k: str(v) for k, v in meta.items()}


def _schedule_keys(cfg: Any, plan: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Session, learning rates, optimizer, schedule, precision, steps and epochs."""
    network, trainer, optimizer = cfg.network, cfg.trainer, cfg.optimizer
    precision = run.get("precision")
    lrs = {"ss_learning_rate": None, "ss_text_encoder_lr": network.text_encoder_lr, "ss_unet_lr": network.unet_lr}
    lrs = {k: optimizer.lr if v is None else v for k, v in lrs.items()}
    if _adafactor_relative_step(cfg):
        lrs = dict.fromkeys(lrs)  # kohya sets them to None: Adafactor chooses its own step size
    return {
        "ss_session_id": random.randint(0, 2**32),
        "ss_training_started_at": time.time(),
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
        "ss_mixed_precision": precision.mixed_precision if precision else cfg.precision.mixed_precision,
        "ss_full_fp16": precision.full_fp16 if precision else cfg.precision.lora_dtype == "float16",
        "ss_seed": cfg.seed,
        "ss_lowram": False,
        "ss_training_comment": None,
        "ss_sd_scripts_commit_hash": f"sdlora {run['version']}",
    }


def _adafactor_relative_step(cfg: Any) -> bool:
    from sdlora.optim.rules import adafactor_relative_step, is_adafactor

    return is_adafactor(optimizer_class(cfg.optimizer)) and adafactor_relative_step(cfg.optimizer)


def optimizer_class(node: Any) -> str:
    from sdlora.optim.factory import target_class_name

    return target_class_name(node)


def _literal(value: Any) -> str:
    """A config value as kohya's ``optimizer_args`` literal (lists become tuples: ``betas=(0.9, 0.999)``)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return str(tuple(value)) if isinstance(value, list) else str(value)


def optimizer_description(node: Any) -> str:
    """``ss_optimizer``: ``module.Class(k=v,…)`` with the optimizer's arguments besides lr, as kohya writes it."""
    args = ",".join(f"{k}={_literal(v)}" for k, v in node.items() if not str(k).startswith("_") and k != "lr")
    return optimizer_class(node) + (f"({args})" if args else "")


def scheduler_name(node: Any) -> str:
    """``ss_lr_scheduler``: kohya's scheduler name (sdlora's factories carry it), ``adafactor:<initial lr>``."""
    name = str(node._target_).rsplit(".", 1)[-1]
    if str(node._target_) == "sdlora.optim.schedulers.adafactor":
        return f"adafactor:{node.get('initial_lr')}"
    return name


def _network_keys(cfg: Any) -> dict[str, Any]:
    network = cfg.network
    return {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": network.rank,
        "ss_network_alpha": network.alpha if network.alpha else network.rank,
        "ss_network_dropout": None,
        "ss_network_args": json.dumps({}),
        "ss_scale_weight_norms": None,
    }


def _model_keys(cfg: Any, family: Any, prediction_type: str) -> dict[str, Any]:
    return {
        "ss_v2": family.is_v2,
        "ss_base_model_version": family.base_model_version_for(prediction_type),
        "ss_clip_skip": cfg.model.clip_skip,
        "ss_max_token_length": cfg.model.max_token_length,
    }


def _loss_keys(cfg: Any) -> dict[str, Any]:
    """Noise and loss-weighting options (none of kohya's extras is used by the plain loss)."""
    return {
        "ss_noise_offset": None,
        "ss_multires_noise_iterations": None,
        "ss_multires_noise_discount": None,
        "ss_adaptive_noise_scale": None,
        "ss_zero_terminal_snr": False,
        "ss_prior_loss_weight": 1.0,
        "ss_min_snr_gamma": None,
    }


def _dataset_keys(cfg: Any, plan: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Images, repeats, captions and buckets (kohya's keys for a run without a dataset config)."""
    data, trainer = cfg.data, cfg.trainer
    width, height = run["resolution"]
    dataset_dirs = {
        d.name: {"n_repeats": next(r.repeats for r in plan.records if r.subset.directory == d), "img_count": n}
        for d, n in plan.scan.images_per_subset.items()
        if n
    }
    buckets = {
        str(i): {"resolution": list(res), "count": len(entries)}
        for i, (res, entries) in enumerate(plan.buckets().items())
    }
    return {
        "ss_num_train_images": sum(r.repeats for r in plan.records if not r.subset.is_reg),
        "ss_num_reg_images": plan.num_reg_images,
        "ss_cache_latents": False,
        "ss_caption_dropout_rate": 0.0,
        "ss_caption_dropout_every_n_epochs": 0,
        "ss_caption_tag_dropout_rate": 0.0,
        "ss_face_crop_aug_range": None,
        "ss_batch_size_per_device": data.batch_size,
        "ss_total_batch_size": data.batch_size * trainer.accumulate_grad_batches * run.get("world_size", 1),
        "ss_resolution": f"({width}, {height})",
        "ss_color_aug": False,
        "ss_flip_aug": False,
        "ss_random_crop": False,
        "ss_shuffle_caption": False,
        "ss_enable_bucket": False,
        "ss_bucket_no_upscale": False,
        "ss_min_bucket_reso": None,
        "ss_max_bucket_reso": None,
        "ss_keep_tokens": 0,
        "ss_dataset_dirs": json.dumps(dataset_dirs),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps(tag_frequency(plan.records)),
        "ss_bucket_info": json.dumps({"buckets": buckets, "mean_img_ar_error": 0.0}),
    }


def modelspec_metadata(
    family: Any, prediction_type: str, title: str, resolution: tuple[int, int], cfg: Any
) -> dict[str, str]:
    """``modelspec.*`` keys (SAI model spec 1.0.0) as kohya writes them for a LoRA."""
    spec = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC,
        "modelspec.architecture": f"{family.modelspec_architecture(prediction_type)}/lora",
        "modelspec.implementation": family.modelspec_implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
    }
    if cfg.model.clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(cfg.model.clip_skip)
    if (cfg.loss.min_timestep, cfg.loss.max_timestep) != (0, 1000):
        spec["modelspec.timestep_range"] = f"{cfg.loss.min_timestep},{cfg.loss.max_timestep}"
    return spec


def save_time_metadata(steps: int, epoch: int) -> dict[str, str]:
    """Keys kohya adds at every save."""
    return {"ss_training_finished_at": str(time.time()), "ss_steps": str(steps), "ss_epoch": str(epoch)}
