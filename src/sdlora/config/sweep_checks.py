"""Checks of the sweep and scale-out options (part of the one validation pass in :mod:`.validate`):
``network.alpha_ratio``, ``trainer.strategy``, ``trainer.devices`` and ``trainer.num_nodes``."""

from __future__ import annotations

from omegaconf import DictConfig

from sdlora.errors import SdloraError


def check_sweep_and_scale(cfg: DictConfig, problems: list[str]) -> None:
    """Append one readable message per problem to ``problems``."""
    from sdlora.distributed.world import planned_world_size, strategy_problems

    ratio = cfg.network.get("alpha_ratio")
    if ratio is not None and ratio <= 0:
        problems.append(f"network.alpha_ratio must be > 0 (alpha = alpha_ratio × rank) or null, got {ratio}")
    problems += strategy_problems(cfg.trainer)
    try:
        planned_world_size(cfg.trainer)
    except SdloraError as exc:
        problems.append(str(exc))
