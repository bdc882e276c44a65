"""The memory estimate of a run (:mod:`sdlora.memory`) from its resolved config and data plan: where the model's
architecture is described, and the :class:`~sdlora.memory.RunShape` the estimate reads. Printed with the data plan by
every run and ``dry_run=true`` (:mod:`sdlora.run`), shown by the web UI's Plan, and checked against
``trainer.memory_budget_gb``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.memory import MODULE_OPTIONS, MemoryEstimate, RunShape, estimate
from sdlora.models.host_parts import caches_text
from sdlora.models.sizes import ModelSize, model_size


def architecture_folder(model: Any, family: Any) -> tuple[Path, str]:
    """The diffusers config folder describing the run's model and a label: a diffusers folder given as
    ``model.pretrained``, else ``model.config``, else the family's shipped config (single files load with it; a hub
    id is described by it)."""
    from sdlora.models.configs import config_dir

    pretrained = Path(str(model.pretrained)).expanduser() if model.pretrained else None
    if pretrained is not None and (pretrained / "unet" / "config.json").is_file():
        return pretrained, f"architecture from {pretrained}"
    if model.config:
        return Path(model.config).expanduser(), f"architecture from model.config={model.config}"
    folder = config_dir(family.shipped_config)
    return folder, f"{family.name} architecture"


def run_shape(config: Any, plan: Any, family: Any) -> RunShape:
    """The :class:`RunShape` of a resolved config and its data plan."""
    from sdlora.optim.factory import rule_name

    precision, network, data = config.precision, config.network, config.data
    buckets = plan.buckets()
    bucket = max(buckets, key=lambda b: (b[0] * b[1], b)) if buckets else (512, 512)
    vae = "float32" if precision.no_half_vae else precision.weight_dtype
    flips = sum(n > 0 and r.subset.options.flip_aug for r, n in zip(plan.records, plan.repeats, strict=True))
    images = sum(n > 0 for n in plan.repeats) + flips
    sample = None
    sample_cfg = config.sample
    if sample_cfg.prompts and (sample_cfg.every_n_steps or sample_cfg.every_n_epochs or sample_cfg.at_start):
        sample = bucket
    return RunShape(
        weight_dtype=precision.weight_dtype, vae_dtype=vae, lora_dtype=precision.lora_dtype,
        autocast=precision.trainer_precision != "32-true", batch_size=data.batch_size, bucket=tuple(bucket),
        gradient_checkpointing=bool(config.model.gradient_checkpointing), network=network.name.value,
        preset=network.preset.value if network.preset is not None else "full",
        rank=network.rank or 1, conv_rank=network.conv_rank or 0, factor=int(network.factor),
        **{option: bool(getattr(network, option)) for option in MODULE_OPTIONS},
        block_size=network.block_size or 1,
        **{key: _values(getattr(network, key)) for key in ("block_lr_weight", "block_dims", "conv_block_dims")},
        train_unet=bool(network.train_unet), train_text_encoder=bool(network.train_text_encoder),
        optimizer=rule_name(config.optimizer), first_moment=config.optimizer.get("beta1") is not None,
        cache_latents=data.cache_latents.value, cache_text=caches_text(data),
        validation=bool(config.validation.dir or config.validation.split), cached_images=images,
        text_chunks=max(1, int(config.model.max_token_length) // 75), sample_size=sample,
    )  # fmt: skip


def _values(values: Any) -> tuple | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class RunMemory:
    """A run's estimate with what it was computed from (the budget check re-estimates variants of the shape)."""

    estimate: MemoryEstimate
    size: ModelSize
    shape: RunShape

    def budget_problem(self, budget_gb: float | None) -> str | None:
        """None when there is no budget or the estimate fits it; else the error, naming options that would fit."""
        from sdlora.memory_budget import budget_message

        return None if budget_gb is None else budget_message(self.estimate, budget_gb, self.size, self.shape)


def estimate_run(config: Any, plan: Any, family: Any) -> RunMemory | None:
    """The memory estimate of a run, or None when its architecture cannot be laid out (a config this estimate does
    not know: the run goes on without it)."""
    from sdlora.models.sizes import UnknownLayout

    folder, label = architecture_folder(config.model, family)
    try:
        size = model_size(folder)
    except (UnknownLayout, OSError, KeyError, ValueError, TypeError):
        return None
    size.source = label
    shape = run_shape(config, plan, family)
    return RunMemory(estimate(size, shape), size, shape)
