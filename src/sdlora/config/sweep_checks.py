"""Checks of the sweep and scale-out options (part of the one validation pass in :mod:`.validate`):
``network.alpha_ratio``, ``trainer.strategy`` (and what trainer=fsdp cannot combine with), ``trainer.devices`` and
``trainer.num_nodes``."""

from __future__ import annotations

from omegaconf import DictConfig

from sdlora.errors import SdloraError


def check_sweep_and_scale(cfg: DictConfig, problems: list[str]) -> None:
    """Append one readable message per problem to ``problems``."""
    from sdlora.distributed.world import planned_world_size, strategy_problems, uses_fsdp

    ratio = cfg.network.get("alpha_ratio")
    if ratio is not None and ratio <= 0:
        problems.append(f"network.alpha_ratio must be > 0 (alpha = alpha_ratio × rank) or null, got {ratio}")
    problems += strategy_problems(cfg.trainer)
    if uses_fsdp(cfg.trainer) and cfg.model.get("compile"):
        problems.append(
            "model.compile=true cannot be combined with trainer=fsdp (a compiled U-Net around FSDP's per-block "
            "units is not supported by sdlora): set model.compile=false"
        )
    if uses_fsdp(cfg.trainer) and cfg.precision.lora_dtype == "float16":
        problems.append(
            f"precision={cfg.precision.name} (float16 LoRA with sdlora's fp16-gradient scaler plugin) cannot be "
            "combined with trainer=fsdp, which needs FSDP's precision plugin: use precision=fp16_mixed or full_bf16"
        )
    try:
        planned_world_size(cfg.trainer)
    except SdloraError as exc:
        problems.append(str(exc))
